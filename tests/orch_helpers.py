"""Helpers for orchestration tests: run the real CLI, read trials and MLflow runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import mlflow


def orch(*args: str, workdir: Path, uri: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "orchestration.cli", *args, "--workdir", str(workdir), "--tracking-uri", uri]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def only_trial(workdir: Path) -> Path:
    trials = sorted((workdir / "trials").glob("*/trial.yaml"))
    assert len(trials) == 1, trials
    return trials[0].parent


def jobs(trial_dir: Path) -> list[dict]:
    return json.loads((trial_dir / "jobs.json").read_text())


def run_of(trial_dir: Path, uri: str):
    run_id = (trial_dir / "mlflow_run_id").read_text().strip()
    return mlflow.MlflowClient(tracking_uri=uri).get_run(run_id)


def metric_steps(uri: str, run_id: str, key: str) -> dict[int, float]:
    hist = mlflow.MlflowClient(tracking_uri=uri).get_metric_history(run_id, key)
    steps = [m.step for m in hist]
    assert len(steps) == len(set(steps)), f"{key}: duplicated steps {sorted(steps)}"
    return {m.step: m.value for m in hist}


def wait_for(predicate, timeout: float, what: str, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def last_step(trial_dir: Path) -> int:
    p = trial_dir / "metrics.jsonl"
    if not p.exists():
        return 0
    lines = p.read_text().splitlines()
    return json.loads(lines[-1])["step"] if lines else 0


def job_logs(trial_dir: Path, tail: int = 4000) -> str:
    """The end of every SLURM job log of a trial (stderr and stdout), for a failing assertion."""
    parts = []
    for log in sorted((trial_dir / "slurm").glob("*/*_log.*")):
        parts.append(f"--- {log.relative_to(trial_dir)}\n{log.read_text(errors='replace')[-tail:]}")
    return "\n".join(parts) or "(no SLURM job logs)"
