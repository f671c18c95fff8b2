"""Where a job runs (SLURM or the local runner), how often it was requeued, and requeueing it."""

from __future__ import annotations

import os
import subprocess

from mugs.errors import EXIT_REQUEUED as EXIT_REQUEUED  # re-exported: the one definition


def slurm_job_id() -> str | None:
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def requeue_count() -> int:
    """SLURM_RESTART_COUNT on SLURM, MUGS_REQUEUE_COUNT under the local runner, else 0."""
    for var in ("SLURM_RESTART_COUNT", "MUGS_REQUEUE_COUNT"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def requeue_self() -> bool:
    """Requeue the current SLURM job (same id, same submission). False outside SLURM."""
    job = slurm_job_id()
    if job is None:
        return False
    subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True, text=True, timeout=60)
    return True
