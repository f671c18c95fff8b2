"""Tracking calls from inside jobs never stop a job: an unreachable server only warns.

Metrics are buffered to the trial's spool by the logger; a run's final status is derived from the
trial's files by :func:`finalize_run`, which a later job or ``mugs-orch sync`` can call again.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from orchestration import tracking
from orchestration.trial import TrialSpec, TrialState, file_state


def safe(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except Exception as e:
        name = getattr(call, "__name__", "tracking call")
        print(
            f"warning: MLflow {name} failed ({type(e).__name__}: {str(e)[:200]}); continuing", file=sys.stderr
        )
        return None


def trial_outcome(spec: TrialSpec) -> str | None:
    """FINISHED / FAILED from the trial's files, or None while work remains."""
    state = file_state(spec.dir)
    return state.run_status if state in (TrialState.DONE, TrialState.FAILED) else None


def finalize_run(spec: TrialSpec) -> str | None:
    """Set the run's final status when the trial's files say it is over. Returns it (or None)."""
    outcome = trial_outcome(spec)
    if outcome is not None and spec.run_id:
        safe(tracking.set_status, spec.tracking_uri, spec.run_id, outcome)
    return outcome
