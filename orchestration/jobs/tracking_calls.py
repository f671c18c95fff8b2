"""Tracking calls from inside jobs never stop a job: an unreachable server only warns.

Metrics are buffered to the trial's spool by the logger; a run's final status is derived from the
trial's files by :func:`finalize_run`, which a later job or ``mugs-orch sync`` can call again.

A job's calls go through :func:`track`: to the trial's tracking agent while one is open
(:func:`tracking_agent`, rank 0 of a job process: :mod:`orchestration.tracking.agent`), made in
this process otherwise. Nothing here imports MLflow until a call is made in this process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mugs.callbacks import Callback
from orchestration import tracking
from orchestration.tracking.calls import make_call, safe
from orchestration.trial import TrialSpec, TrialState, file_state

__all__ = [
    "drain_agent",
    "finalize_run",
    "metrics_callback",
    "safe",
    "track",
    "track_queued",
    "tracking_agent",
]

AGENT_ENV = "MUGS_TRACKING_AGENT"  # "0": make every call in the job's own process

_agent: Any = None  # the open TrackingAgent of this process, if any


def track(op: str, *args: Any) -> None:
    """One tracking call (``set_tags``, ``set_status``, ``sync_spool``, ``log_metrics``,
    ``log_artifact`` of :mod:`orchestration.tracking`, same arguments): queued to the agent while
    one is open, else made now; a failure only warns."""
    if _agent is not None:
        _agent.call(op, *args)
    else:
        make_call(op, args)


def track_queued(op: str, *args: Any) -> None:
    """For a signal handler (submitit's ``checkpoint()``): queue the call to the open agent, or
    make none when no agent is open. A handler runs wherever the job was, possibly halfway through
    an import; importing MLflow there can meet that half-made module and fail (an ImportError
    from ``yaml``, seen in 4 of 30 signals sent during a job's imports) or break the job's own import."""
    if _agent is not None:
        _agent.call(op, *args)


def _is_rank0() -> bool:
    return (os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or "0") == "0"


@contextmanager
def tracking_agent(spec: TrialSpec) -> Iterator[None]:
    """Route this process's tracking calls through an agent process while inside (rank 0 of a
    trial that has a run; reentrant: an inner use keeps the outer agent). On exit, waits for the
    agent to deliver everything and end."""
    global _agent
    if _agent is not None or not spec.run_id or not _is_rank0() or os.environ.get(AGENT_ENV) == "0":
        yield
        return
    from orchestration.tracking.agent import TrackingAgent

    _agent = TrackingAgent(spec.dir, make_call)
    try:
        yield
    finally:
        drain_agent()


def drain_agent() -> None:
    """Wait until the open agent has made every call queued so far and ended; later calls are
    made in this process. Before anything that may kill this process (``scontrol requeue``)."""
    global _agent
    agent, _agent = _agent, None
    if agent is not None:
        agent.close()


def metrics_callback(spec: TrialSpec) -> Callback:
    """The trainer's callback that sends its metrics to the trial's run (through the agent if open)."""
    if _agent is not None:
        from orchestration.tracking.agent import AgentMetricsCallback

        return AgentMetricsCallback(_agent, spec.tracking_uri, spec.run_id, spec.paths.spool)
    return tracking.MlflowMetricsCallback(spec.tracking_uri, spec.run_id, spec.paths.spool)


def trial_outcome(spec: TrialSpec) -> str | None:
    """FINISHED / FAILED from the trial's files, or None while work remains."""
    state = file_state(spec.dir)
    return state.run_status if state in (TrialState.DONE, TrialState.FAILED) else None


def finalize_run(spec: TrialSpec) -> str | None:
    """Set the run's final status when the trial's files say it is over. Returns it (or None)."""
    outcome = trial_outcome(spec)
    if outcome is not None and spec.run_id:
        track("set_status", spec.tracking_uri, spec.run_id, outcome)
    return outcome
