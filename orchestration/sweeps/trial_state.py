"""Where a trial stands, from its directory and its backend: done, failed, active, or to do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestration.backends.base import TERMINAL
from orchestration.jobs.tracking_calls import trial_outcome
from orchestration.sweeps.pruning import is_pruned
from orchestration.trial import TRIAL_FILE, TrialSpec, read_jobs


def classify(trial_dir: Path) -> str:
    """new | done | failed | pruned | active | stopped (interrupted, resumable)."""
    if not (trial_dir / TRIAL_FILE).exists():
        return "new"
    if is_pruned(trial_dir):
        return "pruned"  # stopped early by the sweep's pruner: final, never rerun
    spec = TrialSpec.load(trial_dir)
    outcome = trial_outcome(spec)
    if outcome == "FINISHED":
        return "done"
    jobs = read_jobs(trial_dir)
    if not jobs:
        return "stopped"
    if spec.backend == "slurm":
        from orchestration.backends.slurm import sacct_states

        st = sacct_states([j["job_id"] for j in jobs])
        states = [st.get(j["job_id"], (j["state"], ""))[0] for j in jobs]
        if any(s not in TERMINAL for s in states):
            return "active"
    else:
        from orchestration.backends.local import _runner_alive

        if _runner_alive(trial_dir):
            return "active"
    return "failed" if outcome == "FAILED" else "stopped"


def results(trial_dir: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for f in sorted(trial_dir.glob("eval_*.json")):
        data: dict[str, Any] = json.loads(f.read_text())
        for k, v in data.items():
            if k.startswith(("knn_top1", "linear_top1")) and isinstance(v, (int, float)):
                out[f"eval/{k}"] = float(v)
    return out


def progress_step(trial_dir: Path) -> int:
    p = trial_dir / "metrics.jsonl"
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
