"""The known methods: the config class of each ``method.name`` and where its implementation lives.

Only config classes are imported here (plain dataclasses), so ``mugs.config`` can read the
``method`` section without importing any network code; :func:`method_class` imports the
implementation when a trainer needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

from mugs.errors import ConfigError
from mugs.methods.mugs.config import MugsMethodConfig
from mugs.methods.pwself.config import PwSelfConfig
from mugs.methods.smog.config import SmogConfig
from mugs.methods.univip.config import UnivipConfig

METHOD_CONFIGS: dict[str, type] = {
    "mugs": MugsMethodConfig,
    "smog": SmogConfig,
    "pwself": PwSelfConfig,
    "univip": UnivipConfig,
}
_IMPLEMENTATIONS = {
    "mugs": "mugs.methods.mugs.method:MugsMethod",
    "smog": "mugs.methods.smog.method:SmogMethod",
    "pwself": "mugs.methods.pwself.method:PwSelfMethod",
    "univip": "mugs.methods.univip.method:UnivipMethod",
}
DEFAULT_METHOD = "mugs"


def method_names() -> list[str]:
    return sorted(METHOD_CONFIGS)


def method_config_class(name: Any) -> type:
    """The config dataclass of ``method.name``; a ConfigError naming the known ones otherwise."""
    if not isinstance(name, str) or name not in METHOD_CONFIGS:
        raise ConfigError(f"method.name: unknown method {name!r} (known: {', '.join(method_names())})")
    return METHOD_CONFIGS[name]


def method_class(name: str) -> type:
    """The :class:`mugs.methods.base.Method` subclass of ``method.name``."""
    method_config_class(name)
    module, _, attr = _IMPLEMENTATIONS[name].partition(":")
    return getattr(importlib.import_module(module), attr)
