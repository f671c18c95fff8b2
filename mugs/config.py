"""Typed configuration for the Mugs trainer, layered defaults -> preset -> file -> ``--set``.

Plain dataclasses (no pydantic) so the core runs on a box with only torch/timm; PyYAML comes
with timm.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mugs.errors import ConfigError as ConfigError  # re-exported
from mugs.methods.mugs.config import MugsMethodConfig as MethodConfig  # re-exported: Mugs' section
from mugs.methods.pwself.config import PwSelfConfig
from mugs.methods.registry import method_config_class
from mugs.methods.smog.config import SmogConfig
from mugs.methods.univip.config import UnivipConfig
from mugs.strict_yaml import YamlInputError, parse_yaml, read_yaml_file
from mugs.validation import positive as _positive


@dataclass
class ModelConfig:
    arch: str = "vit_small"  # vit_tiny | vit_small | vit_base | vit_large
    patch_size: int = 16
    drop_path_rate: float = 0.1
    # head sizes (official: 2048 hidden, 256 out, predictor 4096, group bottleneck 256)
    head_hidden_dim: int = 2048
    predictor_hidden_dim: int = 4096
    instance_out_dim: int = 256
    local_group_out_dim: int = 256
    group_out_dim: int = 65536
    group_bottleneck_dim: int = 256
    norm_last_layer: bool = False
    norm_before_pred: bool = True
    use_bn_in_head: bool = False  # BatchNorm in the projectors (official flag; default off)
    # only for tiny custom backbones (demo): overrides of the arch's width/depth/heads
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    # position embedding for crops of another grid than data.image_size: "dino" (bicubic by the
    # scale factor (new + 0.1) / old, as the official Mugs/DINO code) | "timm" (timm's resampling)
    pos_embed_interp: str = "dino"


@dataclass
class DataConfig:
    dataset: str = "imagefolder"  # imagefolder | cifar10 | digits
    root: str | None = None
    image_size: int = 224
    local_crop_size: int = 96
    local_crops_number: int = 10
    global_crops_scale: list[float] = field(default_factory=lambda: [0.25, 1.0])
    local_crops_scale: list[float] = field(default_factory=lambda: [0.05, 0.25])
    strong_prob: float = 0.5  # probability that a student crop is strongly augmented
    rand_augment: str = "rand-m9-mstd0.5-inc1"
    strong_ratio: float = 0.45
    re_prob: float = 0.25
    solarize_prob: float = 0.2  # second teacher global crop (official 0.2)
    flip_prob: float = 0.5  # horizontal flip of every crop (official 0.5)
    num_workers: int = 4
    augment_backend: str = "pil"  # pil (official, per crop) | tensor (weak views rendered per batch)
    subset: int | None = None  # N training images drawn once (fixed seed, any run seed): smoke runs


@dataclass
class TrainConfig:
    epochs: int = 100
    max_steps: int | None = None  # hard stop; schedules still span `epochs`
    batch_size: int = 64  # per process
    lr: float = 0.0008  # base lr for a global batch of 256
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.2
    momentum_teacher: float = 0.996
    clip_grad: float = 3.0
    freeze_last_layer: int = 1
    patch_embed_lr_mult: float = 0.2
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False
    log_every: int = 10
    checkpoint_every: int = 0  # steps; 0 = only at epoch ends and at the end
    keep_epoch_checkpoints: bool = False


@dataclass
class EvalConfig:
    knn_k: list[int] = field(default_factory=lambda: [10, 20, 100, 200])
    knn_temperature: float = 0.07
    linear_lrs: list[float] = field(default_factory=lambda: [0.001, 0.003, 0.01, 0.03, 0.1])
    linear_epochs: int = 100
    linear_batch_size: int = 256
    n_last_blocks: int = 4
    avgpool_patchtokens: bool = False
    # online kNN monitor during pretraining (the intermediate objective sweeps prune on):
    # every `monitor_every` steps, weighted kNN top-1 of held-out *training* images against the
    # rest of the training split; 0 = off. The test split is never touched.
    monitor_every: int = 0
    monitor_bank: int = 2000
    monitor_queries: int = 500
    monitor_k: int = 20


@dataclass
class MugsConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig | SmogConfig | PwSelfConfig | UnivipConfig = field(default_factory=MethodConfig)  # by method.name
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


ARCHS = ("vit_tiny", "vit_small", "vit_base", "vit_large")
POS_EMBED_INTERP = ("dino", "timm")
DATASETS = ("imagefolder", "cifar10", "digits")
AUGMENT_BACKENDS = ("pil", "tensor")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def _merge_into(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for k, v in updates.items():
        key = f"{prefix}{k}"
        if k not in names:
            raise ConfigError(f"{key}: unknown key (known: {', '.join(sorted(names))})")
        current = getattr(obj, k)
        if isinstance(obj, MugsConfig) and k == "method" and isinstance(v, dict):
            current = _switch_method(obj, v)
        if dataclasses.is_dataclass(current):
            if not isinstance(v, dict):
                raise ConfigError(f"{key}: expected a mapping, got {v!r}")
            _merge_into(current, v, prefix=f"{key}.")
        else:
            setattr(obj, k, _coerce(v, hints[k], key))


def _switch_method(cfg: MugsConfig, updates: dict[str, Any]) -> Any:
    """A layer that names another ``method.name`` starts that method's section from its defaults."""
    name = updates.get("name", cfg.method.name)
    if name != cfg.method.name:
        cfg.method = method_config_class(name)()  # an unknown name: ConfigError naming the known ones
    return cfg.method


def parse_override(item: str) -> dict[str, Any]:
    """``a.b=value`` -> ``{"a": {"b": value}}``, the value parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except YamlInputError as e:
        raise ConfigError(f"--set {key}: value {raw!r}: {e}") from e
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_yaml_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p}: not found")
    try:
        data = read_yaml_file(p)
    except YamlInputError as e:
        raise ConfigError(f"config file {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: top level must be a mapping")
    return data


def build_config(
    preset: str | None = None,
    file_values: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    check_data: bool = True,
) -> MugsConfig:
    """Layer defaults -> preset -> file -> overrides, then validate."""
    from mugs.presets import get_preset

    cfg = MugsConfig()
    layers: list[dict[str, Any]] = []
    if preset is not None:
        layers.append(get_preset(preset))
        cfg.preset = preset
    if file_values:
        layers.append(file_values)
    for item in overrides or []:
        layers.append(parse_override(item))
    for layer in layers:
        _merge_into(cfg, copy.deepcopy(layer))
    validate(cfg, check_data=check_data)
    return cfg


def config_from_dict(values: dict[str, Any]) -> MugsConfig:
    cfg = MugsConfig()
    _merge_into(cfg, copy.deepcopy(values))
    return cfg


# Keys added after checkpoints were first written, with the value that reproduces what those
# checkpoints were trained with (a default that changed behaviour must not apply to them).
LEGACY_CHECKPOINT_VALUES: dict[tuple[str, str], Any] = {("model", "pos_embed_interp"): "timm"}


def config_from_checkpoint(values: dict[str, Any]) -> MugsConfig:
    """The config saved in a checkpoint; keys it predates get the behaviour it was trained with."""
    values = copy.deepcopy(values)
    for (section, key), old in LEGACY_CHECKPOINT_VALUES.items():
        values.setdefault(section, {}).setdefault(key, old)
    return config_from_dict(values)


def validate(cfg: MugsConfig, check_data: bool = True) -> None:
    """Check every section; the first impossible value raises :class:`ConfigError` naming its key."""
    _validate_finite(cfg)
    cfg.method.validate(cfg.train.epochs, cfg.data.local_crops_number)
    if hasattr(cfg.method, "validate_config"):  # what a method needs of the other sections
        cfg.method.validate_config(cfg)
    _validate_train_eval(cfg)
    _validate_model_data(cfg.model, cfg.data)
    if check_data:
        from mugs.data.availability import check_data_available

        check_data_available(cfg.data)


def _validate_finite(cfg: MugsConfig) -> None:
    """No NaN or infinity anywhere (a float field, or an element of a list of them)."""
    for section in ("model", "method", "data", "train", "eval"):
        for f in dataclasses.fields(getattr(cfg, section)):
            value = getattr(getattr(cfg, section), f.name)
            items = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(x, float) and not math.isfinite(x) for x in items):
                raise ConfigError(f"{section}.{f.name}: must be a finite number, got {value}")


def _validate_train_eval(cfg: MugsConfig) -> None:
    t, ev = cfg.train, cfg.eval
    _positive({"train.epochs": t.epochs, "train.batch_size": t.batch_size})
    if ev.monitor_every < 0:
        raise ConfigError(f"eval.monitor_every: must be >= 0 (0 = off), got {ev.monitor_every}")
    _positive(
        {
            "eval.monitor_bank": ev.monitor_bank,
            "eval.monitor_queries": ev.monitor_queries,
            "eval.monitor_k": ev.monitor_k,
        }
    )
    _positive({"eval.knn_temperature": ev.knn_temperature}, "temperature must be > 0")
    if t.max_steps is not None and t.max_steps <= 0:
        raise ConfigError(f"train.max_steps: must be > 0 or null, got {t.max_steps}")
    if t.warmup_epochs > t.epochs:
        raise ConfigError(f"train.warmup_epochs: {t.warmup_epochs} exceeds train.epochs={t.epochs}")
    if not 0 <= t.momentum_teacher <= 1:
        raise ConfigError(f"train.momentum_teacher: must be in [0, 1], got {t.momentum_teacher}")
    if t.precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"train.precision: one of auto, fp32, bf16; got {t.precision!r}")


def _validate_model_data(mo: ModelConfig, d: DataConfig) -> None:
    _positive(
        {
            "data.image_size": d.image_size,
            "data.local_crop_size": d.local_crop_size,
            "model.patch_size": mo.patch_size,
            "model.head_hidden_dim": mo.head_hidden_dim,
            "model.group_out_dim": mo.group_out_dim,
        }
    )
    if mo.arch not in ARCHS:
        raise ConfigError(f"model.arch: unknown architecture {mo.arch!r} (known: {', '.join(ARCHS)})")
    if mo.pos_embed_interp not in POS_EMBED_INTERP:
        raise ConfigError(
            f"model.pos_embed_interp: one of {', '.join(POS_EMBED_INTERP)}; got {mo.pos_embed_interp!r}"
        )
    if mo.embed_dim is not None and mo.num_heads is not None and mo.embed_dim % mo.num_heads:
        raise ConfigError(
            f"model.embed_dim: {mo.embed_dim} is not divisible by model.num_heads={mo.num_heads}"
        )
    for key, size in (("data.image_size", d.image_size), ("data.local_crop_size", d.local_crop_size)):
        if size % mo.patch_size:
            raise ConfigError(f"{key}: {size} is not a multiple of model.patch_size={mo.patch_size}")
    if d.local_crops_number < 0:
        raise ConfigError(f"data.local_crops_number: must be >= 0, got {d.local_crops_number}")
    for name in ("strong_prob", "solarize_prob", "flip_prob", "re_prob"):
        if not 0 <= getattr(d, name) <= 1:
            raise ConfigError(f"data.{name}: must be in [0, 1], got {getattr(d, name)}")
    for key, sc in (
        ("data.global_crops_scale", d.global_crops_scale),
        ("data.local_crops_scale", d.local_crops_scale),
    ):
        if len(sc) != 2 or not 0 < sc[0] <= sc[1] <= 1:
            raise ConfigError(f"{key}: expected [low, high] with 0 < low <= high <= 1, got {sc}")
    if d.dataset not in DATASETS:
        raise ConfigError(f"data.dataset: unknown dataset {d.dataset!r} (known: {', '.join(DATASETS)})")
    _validate_augment_backend(d)


def _validate_augment_backend(d: DataConfig) -> None:
    if d.augment_backend not in AUGMENT_BACKENDS:
        raise ConfigError(
            f"data.augment_backend: one of {', '.join(AUGMENT_BACKENDS)}; got {d.augment_backend!r}"
        )
    if d.augment_backend != "tensor":
        return
    if d.strong_prob > 0:
        raise ConfigError(
            "data.augment_backend: 'tensor' renders weak views only; set data.strong_prob 0 "
            f"(got {d.strong_prob}) or use 'pil'"
        )
