"""Reading hand-written YAML strictly: safe loader, UTF-8 only, a duplicated key is an error.

PyYAML's ``safe_load`` keeps the last of two equal keys without a word, so ``name:`` written
twice in a sweep spec silently wins; and a file in another encoding fails with a bare
UnicodeDecodeError. :func:`read_yaml_file` names the file, the line and the key instead.
Numbers that are NaN or infinite are refused wherever they appear (``.nan`` and ``.inf`` are
valid YAML, never a valid hyperparameter).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml


class YamlInputError(ValueError):
    """The file or text is not acceptable YAML input (message names the file, line and key)."""


class _StrictLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise YamlInputError(f"line {line}: key {key!r} appears twice (first on line {seen[key]})")
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


def _construct_float(loader: _StrictLoader, node: yaml.ScalarNode) -> float:
    value = yaml.SafeLoader.construct_yaml_float(loader, node)
    if not math.isfinite(value):
        raise YamlInputError(f"line {node.start_mark.line + 1}: {node.value!r} is not a finite number")
    return value


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def parse_yaml(text: str, where: str = "") -> Any:
    """Parse ``text``; errors become :class:`YamlInputError` prefixed with ``where``."""
    prefix = f"{where}: " if where else ""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except YamlInputError as e:
        raise YamlInputError(f"{prefix}{e}") from None
    except yaml.YAMLError as e:
        raise YamlInputError(f"{prefix}not valid YAML: {e}") from None


def read_yaml_file(path: str | Path) -> Any:
    """The file's YAML, read as UTF-8; every problem named with the file (and line)."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = p.read_bytes()[: e.start].count(b"\n") + 1
        raise YamlInputError(f"{p}: line {line}: not UTF-8 text (byte {e.object[e.start]:#04x})") from None
    except OSError as e:
        raise YamlInputError(f"{p}: cannot be read ({e.strerror or e})") from None
    return parse_yaml(text, str(p))
