"""Optuna TPE search through ask/tell, with a journal file as storage (safe on a shared
filesystem), so a killed driver resumes the same study. Each Optuna trial runs one config per
seed; the objective is the mean of the spec's metric over seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestration.jobs.tracking_calls import safe
from orchestration.sweeps.expand import plan, suggest
from orchestration.sweeps.progress import SweepProgress
from orchestration.sweeps.pruning import is_pruned
from orchestration.sweeps.trial_state import results


def _study(run: Any) -> Any:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    s = run.spec.search
    storage = JournalStorage(JournalFileBackend(str(run.sweep_dir / "optuna.journal")))
    return optuna.create_study(
        study_name=run.spec.name,
        storage=storage,
        direction=s.direction,
        sampler=optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=min(4, s.trials or 4)),
        load_if_exists=True,
    )


def _parallel(run: Any) -> int:
    import os

    s, b = run.spec.search, run.spec.backend
    if s.parallel:
        return s.parallel
    if b.name == "slurm":
        return 4
    return max(1, int((os.cpu_count() or 1) // max(b.cpus_per_trial, 1)))


def run_optuna(run: Any) -> int:
    import optuna

    from orchestration import tracking
    from orchestration.sweeps.driver import summarize

    spec = run.spec
    budget = spec.search.trials or 1
    study = _study(run)
    parent_id = run.parent(budget * len(spec.seeds))
    refs = run.reference_dirs(parent_id)  # run with the first batch; never told to the study
    refs_left, maximize = list(refs), spec.search.direction == "maximize"
    all_dirs: list[Path] = []

    def dirs_for(trial: Any, setting: dict[str, Any]) -> list[Path]:
        plans = [plan(spec, setting, seed, run.extra) for seed in spec.seeds]
        return [run.ensure_trial(p, parent_id, {"mugs.optuna_trial": str(trial.number)}) for p in plans]

    def value(dirs: list[Path]) -> float | None:
        vals = [results(d).get(spec.search.metric) for d in dirs]
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None

    # resume: trials the killed driver had asked but not told
    pending = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    while True:
        n_done = sum(t.state != optuna.trial.TrialState.RUNNING for t in study.trials)
        batch: list[tuple[Any, list[Path]]] = []
        for t in pending:
            setting = json.loads(t.user_attrs["setting"])
            batch.append((t.number, dirs_for(t, setting)))  # study.tell accepts the trial number
        pending = []
        while n_done + len(batch) < budget and len(batch) < _parallel(run):
            trial = study.ask()
            setting = suggest(trial, spec)
            trial.set_user_attr("setting", json.dumps(setting))
            batch.append((trial, dirs_for(trial, setting)))
        if not batch:
            break
        dirs = [d for _, ds in batch for d in ds]
        all_dirs += [d for d in dirs if d not in all_dirs]
        progress = SweepProgress(spec.name, refs + all_dirs, spec.search.metric, maximize, refs)
        run.run_batch(dirs, progress, refs_left)
        refs_left = []
        for trial, ds in batch:
            v = value(ds)
            if any(is_pruned(d) for d in ds):
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            elif v is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, v)
    if refs_left:  # a resumed study with nothing left to ask
        run.run_batch([], SweepProgress(spec.name, refs, spec.search.metric, maximize, refs), refs_left)
    out = run.finish(parent_id, refs + all_dirs)
    try:
        best = study.best_trial
        safe(
            tracking.set_tags,
            run.uri,
            parent_id,
            {
                "mugs.best_value": f"{best.value:.4f}",
                "mugs.best_optuna_trial": str(best.number),
                "mugs.best_setting": best.user_attrs.get("setting", ""),
            },
        )
        print(
            f"[{spec.name}] optuna best {spec.search.metric} = {best.value:.2f}: {best.user_attrs.get('setting')}"
        )
    except ValueError:
        pass
    summarize(spec.name, out["rows"], spec.search.metric, spec.search.direction == "maximize")
    return 0 if out["failed"] == 0 else 1
