"""Trial status from the backend (sacct or the local runner), reconciled with MLflow: a run whose
jobs all ended badly is never left RUNNING."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestration import tags, tracking
from orchestration.backends import get_backend
from orchestration.backends.base import JOB_END_STATUS, TERMINAL
from orchestration.sweeps.trial_state import classify, collapse_note
from orchestration.trial import TrialSpec, TrialState, file_state


def _backend(spec: TrialSpec) -> Any:
    return get_backend(spec.backend)


def jobs_verdict(jobs: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(run status, reason) for a chain whose jobs all ended and not all COMPLETED (else None):
    FAILED if any job ended in a failing state (FAILED, OUT_OF_MEMORY, NODE_FAIL, TIMEOUT, ...),
    KILLED if they were only cancelled or preempted. The reason lists each such job with its
    state and exit code."""
    if not jobs or any(j["state"] not in TERMINAL for j in jobs):
        return None
    bad = [j for j in jobs if j["state"] != "COMPLETED"]
    if not bad:
        return None
    status = "FAILED" if any(JOB_END_STATUS.get(j["state"], "FAILED") == "FAILED" for j in bad) else "KILLED"
    reason = "; ".join(
        f"{j['kind']}{':' + j['protocol'] if j['protocol'] else ''} {j['state']}"
        + (f" (exit {j['exit_code']})" if j.get("exit_code") else "")
        for j in bad
    )
    return status, reason


def reconcile(spec: TrialSpec, jobs: list[dict[str, Any]]) -> str | None:
    """If every job is terminal but the run still says RUNNING, end it as :func:`jobs_verdict` says."""
    if not spec.run_id:
        return None
    status = tracking.get_status(spec.tracking_uri, spec.run_id)
    verdict = jobs_verdict(jobs) if status == "RUNNING" else None
    if verdict is None:
        return status
    tracking.set_tags(spec.tracking_uri, spec.run_id, {tags.FAILURE_REASON: verdict[1]})
    tracking.set_status(spec.tracking_uri, spec.run_id, verdict[0])
    return verdict[0]


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


def cancel_trial(trial_dir: Path, reason: str = "cancelled by user") -> bool:
    """Stop the trial's jobs and end its run KILLED; a trial that already ended (done, failed,
    pruned) is left as it is. Returns whether anything was cancelled."""
    if file_state(trial_dir).ended:
        return False
    cancel_jobs(TrialSpec.load(trial_dir), reason)
    return True


def cancel_jobs(spec: TrialSpec, reason: str) -> None:
    """Stop the trial's jobs on its backend and end its run KILLED with ``reason``."""
    _backend(spec).cancel(spec)
    if spec.run_id:
        tracking.set_tags(spec.tracking_uri, spec.run_id, {tags.FAILURE_REASON: reason})
        tracking.set_status(spec.tracking_uri, spec.run_id, "KILLED")


def end_stale_run(trial_dir: Path, state: TrialState | None = None) -> str | None:
    """If nothing of the trial runs any more but its run still says RUNNING, end the run with the
    status its state implies (STOPPED: KILLED, "interrupted; resumable"). Returns the status set.
    ``state``: the trial's :func:`classify` state when the caller has it."""
    state = classify(trial_dir) if state is None else state
    if state.in_flight or state == TrialState.NEW:
        return None
    spec = TrialSpec.load(trial_dir)
    if not spec.run_id or tracking.get_status(spec.tracking_uri, spec.run_id) != "RUNNING":
        return None
    new = state.run_status
    if state == TrialState.STOPPED:
        verdict = jobs_verdict(_backend(spec).states(spec))
        jobs_said = f"{verdict[1]}; " if verdict else ""
        new = verdict[0] if verdict else new
        reason = f"{jobs_said}interrupted before it finished; rerun the same command to resume it"
        tracking.set_tags(spec.tracking_uri, spec.run_id, {tags.FAILURE_REASON: reason})
    tracking.set_status(spec.tracking_uri, spec.run_id, new)
    return new
