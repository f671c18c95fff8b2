"""Turn a sweep spec into resolved trial configs: grid, random, one Optuna proposal, and the
sweep's reference trials (:mod:`orchestration.reference`)."""

from __future__ import annotations

import copy
import itertools
import random
from dataclasses import dataclass, field
from typing import Any

from mugs.config import ConfigError, MugsConfig, build_config, load_yaml_file
from orchestration.reference import TRIAL_INFIX, UNTRAINED, reference_evals
from orchestration.submit import absolutize_paths
from orchestration.sweeps.spec import Axis, SweepSpec
from orchestration.trial import config_hash


@dataclass
class TrialPlan:
    trial_id: str
    config: MugsConfig
    setting: dict[str, Any]  # swept key -> value (tied keys each listed)
    seed: int
    reference: str | None = None  # UNTRAINED for a reference trial (0 steps; not in the search)
    evals: list[str] = field(default_factory=list)  # a reference's protocols; empty: the sweep's

    @property
    def config_hash(self) -> str:
        return config_hash(self.config.to_dict(), self.reference)


def nest(dotted: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {p} is set to a value, not a mapping of keys")
        node[parts[-1]] = value
    return out


def deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = (
            deep_merge(out[k], v)
            if isinstance(v, dict) and isinstance(out.get(k), dict)
            else copy.deepcopy(v)
        )
    return out


def axis_assignments(axis: Axis, value: Any) -> dict[str, Any]:
    """Tied keys: a scalar goes to every key; a list of len(keys) goes key by key."""
    keys = axis.keys
    if len(keys) > 1 and isinstance(value, (list, tuple)) and len(value) == len(keys):
        return dict(zip(keys, value, strict=True))
    return dict.fromkeys(keys, value)


def resolve(spec: SweepSpec, setting: dict[str, Any], seed: int, extra: dict[str, Any]) -> MugsConfig:
    """base preset (or the method's, ``base.method_presets``) -> base config file -> base
    overrides -> profile/--set extras -> the method's overrides -> setting -> seed."""
    b = spec.base
    method = setting.get("method.name", extra.get("method.name", b.overrides.get("method.name")))
    preset = b.method_presets.get(method, b.preset) if isinstance(method, str) else b.preset
    per_method = b.method_overrides.get(method, {}) if isinstance(method, str) else {}
    layers: dict[str, Any] = load_yaml_file(b.config) if b.config else {}
    for dotted in (b.overrides, extra, per_method, setting, {"seed": seed}):
        layers = deep_merge(layers, nest(dotted))
    cfg = build_config(preset, layers, None)
    absolutize_paths(cfg)
    return cfg


def plan(spec: SweepSpec, setting: dict[str, Any], seed: int, extra: dict[str, Any]) -> TrialPlan:
    cfg = resolve(spec, setting, seed, extra)
    h = config_hash(cfg.to_dict())
    return TrialPlan(trial_id=f"{spec.name}-{h[:10]}", config=cfg, setting=setting, seed=seed)


def reference_plans(spec: SweepSpec, extra: dict[str, Any]) -> list[TrialPlan]:
    """One untrained reference trial per seed: the base config, every swept key at the preset's value.

    Its backbone is that seed's initial backbone of every trial (the trainer seeds, then builds the
    student backbone first; swept method/optimisation keys do not change it). It runs the sweep's
    evaluations and, on small image datasets, the raw-pixel kNN.
    """
    plans = []
    for seed in spec.seeds:
        cfg = resolve(spec, {}, seed, extra)
        h = config_hash(cfg.to_dict(), UNTRAINED)
        evals = reference_evals(spec.evals, cfg.data.dataset)
        trial_id = f"{spec.name}-{TRIAL_INFIX}-{h[:10]}"
        plans.append(TrialPlan(trial_id, cfg, {}, seed, reference=UNTRAINED, evals=evals))
    return plans


def grid(spec: SweepSpec, extra: dict[str, Any]) -> list[TrialPlan]:
    per_axis = [[axis_assignments(ax, v) for v in ax.grid_values()] for ax in spec.axes]
    plans = []
    for combo in itertools.product(*per_axis):
        setting: dict[str, Any] = {}
        for part in combo:
            setting.update(part)
        for seed in spec.seeds:
            plans.append(plan(spec, setting, seed, extra))
    return plans


def _sample(axis: Axis, rng: random.Random) -> Any:
    if axis.low is not None and axis.high is not None:
        if axis.log:
            import math

            v = math.exp(rng.uniform(math.log(axis.low), math.log(axis.high)))
        else:
            v = rng.uniform(axis.low, axis.high)
        return int(round(v)) if axis.integer else v
    return rng.choice(axis.grid_values())


def random_search(spec: SweepSpec, extra: dict[str, Any]) -> list[TrialPlan]:
    rng = random.Random(spec.search.seed)
    plans, seen = [], set()
    attempts = 0
    while len(seen) < (spec.search.trials or 0) and attempts < 100 * (spec.search.trials or 1):
        attempts += 1
        setting: dict[str, Any] = {}
        for ax in spec.axes:
            setting.update(axis_assignments(ax, _sample(ax, rng)))
        key = repr(sorted(setting.items()))
        if key in seen:
            continue
        seen.add(key)
        plans += [plan(spec, setting, s, extra) for s in spec.seeds]
    return plans


def suggest(trial: Any, spec: SweepSpec) -> dict[str, Any]:
    """One Optuna proposal as a setting (categorical for lists, float/int for low/high)."""
    setting: dict[str, Any] = {}
    for ax in spec.axes:
        name = "+".join(ax.keys)
        if ax.low is not None and ax.high is not None:
            if ax.integer:
                v: Any = trial.suggest_int(name, int(ax.low), int(ax.high), log=ax.log)
            else:
                v = trial.suggest_float(name, ax.low, ax.high, log=ax.log)
        else:
            options = ax.grid_values()
            idx = trial.suggest_categorical(name, list(range(len(options))))
            v = options[idx]
        setting.update(axis_assignments(ax, v))
    return setting
