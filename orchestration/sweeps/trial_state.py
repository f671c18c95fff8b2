"""Where a trial stands, from its directory and its backend (:class:`orchestration.trial.TrialState`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mugs.diagnostics import PREFIX as DIAG_PREFIX
from mugs.diagnostics import collapse_label, collapsed_branches
from orchestration.backends.base import TERMINAL
from orchestration.reference import metric_prefix
from orchestration.trial import TrialPaths, TrialSpec, TrialState, file_state, read_jobs


def jobs_unfinished(spec: TrialSpec) -> bool:
    """Whether any job of the trial may still run: an unfinished SLURM job (sacct), or a live runner."""
    if spec.backend == "slurm":
        from orchestration.backends.slurm import resolve_claim

        resolve_claim(spec)  # a submission a killed driver never recorded
    jobs = read_jobs(spec.dir)
    if not jobs:
        return False
    if spec.backend == "slurm":
        from orchestration.backends.slurm import sacct_states

        st = sacct_states([j["job_id"] for j in jobs])
        return any(st.get(j["job_id"], (j["state"], ""))[0] not in TERMINAL for j in jobs)
    from orchestration.backends.local import runner_alive

    return runner_alive(spec.dir)


def classify(trial_dir: Path) -> TrialState:
    """The trial's state, with liveness: an unfinished trial none of whose jobs can still run is
    STOPPED (resumable); DONE, FAILED and PRUNED come from its files."""
    state = file_state(trial_dir)
    if state in (TrialState.NEW, TrialState.PRUNED, TrialState.DONE):
        return state
    if jobs_unfinished(TrialSpec.load(trial_dir)):
        return TrialState.RUNNING if state == TrialState.FAILED else state  # a job still runs: in flight
    return TrialState.FAILED if state == TrialState.FAILED else TrialState.STOPPED


def results(trial_dir: Path) -> dict[str, float]:
    """The trial's evaluation results by MLflow metric name (``eval/knn_top1``, ``eval/pixels/...``)."""
    out: dict[str, float] = {}
    for f in sorted(trial_dir.glob("eval_*.json")):
        data: dict[str, Any] = json.loads(f.read_text())
        prefix = metric_prefix(f.stem[len("eval_") :])
        for k, v in data.items():
            if k.startswith(("knn_top1", "linear_top1")) and isinstance(v, (int, float)):
                out[f"{prefix}{k}"] = float(v)
    return out


def progress_step(trial_dir: Path) -> int:
    p = TrialPaths(trial_dir).metrics
    if not p.exists():
        return 0
    try:
        with open(p, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 4096))
            last = f.read().decode(errors="ignore").strip().splitlines()[-1]
        return int(json.loads(last)["step"])
    except (IndexError, ValueError, KeyError):
        return 0


DIAG_TAIL_BYTES = 65536  # a logged step is ~1 kB: the tail holds the last ones


def latest_diagnostics(trial_dir: Path) -> dict[str, float]:
    """The ``diag/...`` values of the last step in ``metrics.jsonl`` that logged any ({} if none)."""
    p = TrialPaths(trial_dir).metrics
    if not p.exists():
        return {}
    try:
        with open(p, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - DIAG_TAIL_BYTES))
            lines = f.read().decode(errors="ignore").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:  # the first, cut line of the tail, or a line being written
            continue
        if isinstance(row, dict):
            diag = {k: v for k, v in row.items() if isinstance(k, str) and k.startswith(DIAG_PREFIX)}
            if diag:
                return diag
    return {}


def collapsed(trial_dir: Path) -> list[str]:
    """Branches whose latest logged diagnostics read collapsed (:mod:`mugs.diagnostics`)."""
    return collapsed_branches(latest_diagnostics(trial_dir))


def collapse_note(trial_dir: Path) -> str:
    """``"COLLAPSED (instance, group)"`` from the trial's latest diagnostics, or ""."""
    return collapse_label(collapsed(trial_dir))
