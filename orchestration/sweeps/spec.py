"""The YAML sweep spec, validated with pydantic. Errors name the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mugs.strict_yaml import YamlInputError, read_yaml_file
from orchestration.backends.slurm import NAME_PATTERN, SlurmOptions


class SpecError(ValueError):
    """A sweep spec is invalid; the message names file, key and problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Base(_Strict):
    preset: str | None = None
    config: str | None = None  # YAML file, relative to the spec
    overrides: dict[str, Any] = Field(default_factory=dict)  # dotted key -> value
    # trials whose method.name is a key here start from that preset instead of ``preset``, and
    # take that method's overrides after the shared ones (a ``method.name`` axis)
    method_presets: dict[str, str] = Field(default_factory=dict)
    method_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Pruning(_Strict):
    """How trials are stopped early (see orchestration/sweeps/pruning.py)."""

    every: int = Field(ge=1)  # online kNN monitor period in steps (sets eval.monitor_every)
    warmup: int = Field(default=0, ge=0)  # median: no pruning before this step
    startup_trials: int = Field(default=2, ge=1)  # median: completed settings before pruning starts
    min_resource: int | None = Field(default=None, ge=1)  # asha: first rung in steps (default: every)
    reduction_factor: int = Field(default=3, ge=2)  # asha: keep the top 1/eta at each rung


class Profile(_Strict):
    """A scale switch: which preset, which overrides, which evaluations."""

    preset: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    method_presets: dict[str, str] = Field(default_factory=dict)  # as Base's, for this profile
    method_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    evals: list[Literal["knn", "linear"]] | None = None
    pruning: Pruning | None = None  # the monitor period and rungs scale with the run length


class Axis(_Strict):
    """One swept setting. ``key`` may list several keys that move together (tied axes)."""

    key: str | list[str]
    values: list[Any] | None = None
    range: tuple[float, float, float] | None = None  # start, stop (inclusive), step
    choices: list[Any] | None = None  # random / optuna categorical
    low: float | None = None  # optuna / random numeric
    high: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def keys(self) -> list[str]:
        return [self.key] if isinstance(self.key, str) else list(self.key)

    @model_validator(mode="after")
    def _one_kind(self) -> Axis:
        kinds = [k for k in ("values", "range", "choices") if getattr(self, k) is not None]
        numeric = self.low is not None or self.high is not None
        if len(kinds) + int(numeric) != 1:
            raise ValueError("give exactly one of values, range, choices, or low/high")
        for k in ("values", "choices"):
            v = getattr(self, k)
            if v is not None and len(v) == 0:
                raise ValueError(f"{k} is empty")
        if numeric and (self.low is None or self.high is None or self.low > self.high):
            raise ValueError("low/high need both, with low <= high")
        if self.range is not None:
            start, stop, step = self.range
            if step <= 0 or stop < start:
                raise ValueError("range is [start, stop, step] with step > 0 and stop >= start")
        if self.log and self.low is not None and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got low={self.low})")
        if not self.keys:
            raise ValueError("key is empty")
        for k in ("values", "choices"):
            dup = duplicates(getattr(self, k) or [])
            if dup:
                raise ValueError(
                    f"{k}: {dup[0]!r} appears twice (values are compared as numbers: 1e-3 == 0.001)"
                )
        return self

    def size(self) -> int | None:
        """How many values the axis has, computed without listing them (None for low/high)."""
        if self.range is not None:
            start, stop, step = self.range
            return int((stop - start) / step + 1e-9) + 1
        values = self.values if self.values is not None else self.choices
        return None if values is None else len(values)

    def grid_values(self) -> list[Any]:
        if self.values is not None:
            return list(self.values)
        if self.choices is not None:
            return list(self.choices)
        if self.range is not None:
            start, stop, step = self.range
            out, x = [], start
            while x <= stop + 1e-9 * max(1.0, abs(stop)):
                out.append(
                    int(round(x)) if float(step).is_integer() and float(start).is_integer() else round(x, 12)
                )
                x += step
            return out
        raise SpecError(f"axis {self.key}: low/high axes have no grid; use search: random or optuna")


def _canonical(value: Any) -> Any:
    """A hashable form in which equal numbers are equal (1 == 1.0 == 1e0), lists element-wise."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _canonical(v)) for k, v in value.items())))
    return ("other", repr(value))


def duplicates(values: list[Any]) -> list[Any]:
    """The values that equal an earlier one, in order."""
    seen: set[Any] = set()
    out = []
    for v in values:
        c = _canonical(v)
        if c in seen:
            out.append(v)
        seen.add(c)
    return out


class Search(_Strict):
    kind: Literal["grid", "random", "optuna"] = "grid"
    trials: int | None = Field(default=None, ge=1)  # budget for random/optuna
    metric: str = "eval/knn_top1"
    direction: Literal["maximize", "minimize"] = "maximize"
    seed: int = 0
    pruner: Literal["none", "median", "asha"] = "none"
    pruning: Pruning | None = None  # needed when pruner is median or asha
    parallel: int | None = Field(default=None, ge=1)  # trials in flight (optuna batches)


class BackendSpec(_Strict):
    name: Literal["local", "ray", "slurm"] = "local"
    address: str | None = None  # ray
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    slurm: dict[str, Any] = Field(default_factory=dict)  # SlurmOptions fields

    @field_validator("slurm")
    @classmethod
    def _slurm_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        known = set(SlurmOptions.model_fields)
        bad = sorted(set(map(str, v)) - known)
        if bad:
            raise ValueError(f"unknown SLURM option(s) {bad} (known: {', '.join(sorted(known))})")
        SlurmOptions.model_validate(v)  # types and safe strings; errors read backend.slurm.<key>
        return v


class SweepSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)  # a directory, MLflow and SLURM job names
    description: str = ""
    base: Base = Field(default_factory=Base)
    axes: list[Axis] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    search: Search = Field(default_factory=Search)
    evals: list[Literal["knn", "linear"]] = Field(default_factory=lambda: ["knn"])
    backend: BackendSpec = Field(default_factory=BackendSpec)
    profiles: dict[str, Profile] = Field(default_factory=dict)
    default_profile: str | None = None
    report: dict[str, Any] = Field(default_factory=dict)  # layout hints for `mugs-orch report`
    experiment: str | None = None
    max_requeues: int = Field(default=3, ge=0)

    @model_validator(mode="after")
    def _search_needs_budget(self) -> SweepSpec:
        if self.search.pruner != "none" and self.search.pruning is None:
            raise ValueError(
                f"search.pruning: the {self.search.pruner!r} pruner needs search.pruning.every "
                "(the online kNN monitor period, in steps)"
            )
        if self.search.kind in ("random", "optuna") and self.search.trials is None:
            raise ValueError(f"search.trials: a {self.search.kind} search needs a trial budget")
        if self.search.kind == "grid":
            for ax in self.axes:
                if ax.values is None and ax.range is None and ax.choices is None:
                    raise ValueError(f"axes: {ax.key} has low/high; grid search needs values or range")
        if self.default_profile is not None and self.default_profile not in self.profiles:
            raise ValueError(f"default_profile: {self.default_profile!r} is not in profiles")
        keys = [k for ax in self.axes for k in ax.keys]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise ValueError(f"axes: key(s) swept twice: {sorted(dup)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: {duplicates(self.seeds)[0]} appears twice")
        return self

    def planned_trials(self) -> int:
        """Trials the grid (or the random/optuna budget) will plan, times seeds, counted from the
        axes' sizes before anything is expanded."""
        if self.search.kind == "grid":
            n = 1
            for ax in self.axes:
                n *= ax.size() or 1
        else:
            n = self.search.trials or 1
        return n * len(self.seeds)


def _loc(err: dict[str, Any]) -> str:
    return ".".join(str(p) for p in err["loc"]) or "(top level)"


def load_spec(path: str | Path) -> SweepSpec:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: sweep spec not found")
    try:
        data = read_yaml_file(p)
    except YamlInputError as e:
        raise SpecError(str(e)) from e
    if not isinstance(data, dict):
        raise SpecError(f"{p}: top level must be a mapping")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{_loc(err)}: {err['msg']}" for err in e.errors())
        raise SpecError(f"{p}: {problems}") from e
    if spec.base.config:
        cfg_path = (p.parent / spec.base.config).resolve()
        if not cfg_path.is_file():
            raise SpecError(f"{p}: base.config: {cfg_path} not found")
        spec.base.config = str(cfg_path)
    return spec
