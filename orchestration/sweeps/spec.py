"""The YAML sweep spec, validated with pydantic. Errors name the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestration.backends.slurm import SlurmOptions


class SpecError(ValueError):
    """A sweep spec is invalid; the message names file, key and problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Base(_Strict):
    preset: str | None = None
    config: str | None = None  # YAML file, relative to the spec
    overrides: dict[str, Any] = Field(default_factory=dict)  # dotted key -> value


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
        if not self.keys:
            raise ValueError("key is empty")
        return self

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
        known = set(SlurmOptions.__dataclass_fields__)
        bad = sorted(set(v) - known)
        if bad:
            raise ValueError(f"unknown SLURM option(s) {bad} (known: {', '.join(sorted(known))})")
        return v


class SweepSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
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
        return self


def _loc(err: dict[str, Any]) -> str:
    return ".".join(str(p) for p in err["loc"]) or "(top level)"


def load_spec(path: str | Path) -> SweepSpec:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: sweep spec not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"{p}: not valid YAML: {e}") from e
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
