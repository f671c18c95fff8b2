"""Optuna TPE search through ask/tell, with a journal file as storage (safe on a shared
filesystem), so a killed driver resumes the same study. Each Optuna trial runs one config per
seed; the objective is the mean of the spec's metric over seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mugs.config import ConfigError
from orchestration import tags
from orchestration.jobs.tracking_calls import safe
from orchestration.sweeps.expand import plan, suggest
from orchestration.sweeps.progress import SweepProgress
from orchestration.sweeps.summary import summarize
from orchestration.sweeps.trial_state import results
from orchestration.trial import is_pruned


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
    """Ask, run and tell in batches until the budget is spent; resumable (the study is on disk)."""
    spec = run.spec
    study = _study(run)
    parent_id = run.parent((spec.search.trials or 1) * len(spec.seeds))
    refs = run.reference_dirs(parent_id)  # run with the first batch; never told to the study
    tracked: list[Path] = list(refs)  # every trial of this invocation, for finish()
    with run.ending(parent_id, tracked):
        _search(run, study, parent_id, refs, tracked)
    out = run.finish(parent_id, tracked)
    _tag_best(run, study, parent_id)
    summarize(spec.name, out["rows"], spec.search.metric, spec.search.direction == "maximize")
    return 0 if out["failed"] == 0 else 1


def _batch(
    run: Any, study: Any, pending: list[Any], dirs_for: Any, n_done: int
) -> list[tuple[Any, list[Path]]]:
    """The next batch: first the trials a killed driver had asked but not told, then new asks.

    A proposal whose config does not validate (e.g. ``num_heads`` not dividing ``embed_dim``) is
    told to the study as FAIL, with the reason, and the search goes on; so is a pending trial
    that has no recorded setting (the driver died between ask and record)."""
    import optuna

    spec = run.spec
    batch: list[tuple[Any, list[Path]]] = []
    budget = spec.search.trials or 1
    for t in pending:
        if "setting" not in t.user_attrs:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            print(f"[{spec.name}] optuna trial {t.number}: no recorded setting; told FAIL", flush=True)
            n_done += 1
            continue
        batch.append((t.number, dirs_for(t, json.loads(t.user_attrs["setting"]))))  # tell takes the number
    while n_done + len(batch) < budget and len(batch) < _parallel(run):
        trial = study.ask()
        setting = suggest(trial, spec)
        trial.set_user_attr("setting", json.dumps(setting))
        try:
            batch.append((trial, dirs_for(trial, setting)))
        except ConfigError as e:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            print(
                f"[{spec.name}] optuna trial {trial.number}: proposal {setting} is invalid ({e}); told FAIL",
                flush=True,
            )
            n_done += 1
    return batch


def _search(run: Any, study: Any, parent_id: str, refs: list[Path], tracked: list[Path]) -> None:
    import optuna

    spec = run.spec
    refs_left, maximize = list(refs), spec.search.direction == "maximize"
    running = optuna.trial.TrialState.RUNNING

    def dirs_for(trial: Any, setting: dict[str, Any]) -> list[Path]:
        plans = [plan(spec, setting, seed, run.extra) for seed in spec.seeds]
        return [run.ensure_trial(p, parent_id, {tags.OPTUNA_TRIAL: str(trial.number)}) for p in plans]

    pending = [t for t in study.trials if t.state == running]
    while True:
        n_done = sum(t.state != running for t in study.trials)
        batch = _batch(run, study, pending, dirs_for, n_done)
        pending = []
        if not batch:
            break
        dirs = [d for _, ds in batch for d in ds]
        tracked += [d for d in dirs if d not in tracked]
        progress = SweepProgress(spec.name, tracked, spec.search.metric, maximize, refs)
        run.run_batch(dirs, progress, refs_left)
        refs_left = []
        for trial, ds in batch:
            _tell(study, trial, ds, spec.search.metric)
    if refs_left:  # a resumed study with nothing left to ask
        run.run_batch([], SweepProgress(spec.name, refs, spec.search.metric, maximize, refs), refs_left)


def _tell(study: Any, trial: Any, dirs: list[Path], metric: str) -> None:
    import optuna

    vals = [v for v in (results(d).get(metric) for d in dirs) if v is not None]
    if any(is_pruned(d) for d in dirs):
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    elif not vals:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    else:
        study.tell(trial, sum(vals) / len(vals))


def _tag_best(run: Any, study: Any, parent_id: str) -> None:
    from orchestration import tracking

    spec = run.spec
    try:
        best = study.best_trial
    except ValueError:  # no completed trial
        return
    safe(
        tracking.set_tags,
        run.uri,
        parent_id,
        {
            tags.BEST_VALUE: f"{best.value:.4f}",
            tags.BEST_OPTUNA_TRIAL: str(best.number),
            tags.BEST_SETTING: best.user_attrs.get("setting", ""),
        },
    )
    print(
        f"[{spec.name}] optuna best {spec.search.metric} = {best.value:.2f}: {best.user_attrs.get('setting')}"
    )
