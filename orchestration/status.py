"""Trial status from the backend (sacct or the local runner), reconciled with MLflow: a run whose
jobs all ended badly is never left RUNNING."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestration import tracking
from orchestration.backends import get_backend
from orchestration.backends.base import TERMINAL
from orchestration.sweeps.trial_state import collapse_note
from orchestration.trial import TrialSpec


def _backend(spec: TrialSpec) -> Any:
    return get_backend(spec.backend)


def reconcile(spec: TrialSpec, jobs: list[dict[str, Any]]) -> str | None:
    """If every job is terminal but the run still says RUNNING, end it FAILED or KILLED."""
    if not spec.run_id:
        return None
    status = tracking.get_status(spec.tracking_uri, spec.run_id)
    if status == "RUNNING" and jobs and all(j["state"] in TERMINAL for j in jobs):
        bad = [j for j in jobs if j["state"] != "COMPLETED"]
        if bad:
            new = "KILLED" if all(j["state"] == "CANCELLED" for j in bad) else "FAILED"
            reason = "; ".join(
                f"{j['kind']}{':' + j['protocol'] if j['protocol'] else ''} {j['state']}" for j in bad
            )
            tracking.set_tags(spec.tracking_uri, spec.run_id, {"mugs.failure_reason": reason})
            tracking.set_status(spec.tracking_uri, spec.run_id, new)
            return new
    return status


def trial_status(trial_dir: Path) -> dict[str, Any]:
    spec = TrialSpec.load(trial_dir)
    jobs = _backend(spec).states(spec)
    try:
        run_status = reconcile(spec, jobs)
    except Exception as e:  # the tracking server may be down; the job states still matter
        run_status = f"unknown (tracking unreachable: {type(e).__name__})"
    return {
        "trial_id": spec.trial_id,
        "backend": spec.backend,
        "run_id": spec.run_id,
        "run_status": run_status,
        "jobs": jobs,
        "collapse": collapse_note(trial_dir),  # "" unless the latest logged diagnostics say collapsed
    }


def cancel_trial(trial_dir: Path, reason: str = "cancelled by user") -> None:
    spec = TrialSpec.load(trial_dir)
    _backend(spec).cancel(spec)
    if spec.run_id:
        tracking.set_tags(spec.tracking_uri, spec.run_id, {"mugs.failure_reason": reason})
        tracking.set_status(spec.tracking_uri, spec.run_id, "KILLED")
