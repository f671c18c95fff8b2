"""The backend interface: submit a trial's chain, report job states, cancel."""

from __future__ import annotations

from typing import Protocol

from orchestration.trial import JobRecord, TrialSpec

TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}
# the MLflow run status a chain's job state implies when it is the reason the chain stopped
JOB_END_STATUS = {
    "COMPLETED": "FINISHED",
    "CANCELLED": "KILLED",  # scancel, mugs-orch cancel, a dependency never satisfied
    "PREEMPTED": "KILLED",  # resumable: a rerun requeues it
    "FAILED": "FAILED",
    "TIMEOUT": "FAILED",
    "OUT_OF_MEMORY": "FAILED",
    "NODE_FAIL": "FAILED",
    "BOOT_FAIL": "FAILED",
    "DEADLINE": "FAILED",
}
JobState = JobRecord  # the backends' name for it


class Backend(Protocol):
    name: str

    def submit(self, spec: TrialSpec, wait: bool = False) -> list[JobState]:
        """Submit pretraining and its evaluations (which start only after pretraining succeeded)."""
        ...

    def states(self, spec: TrialSpec) -> list[JobState]: ...

    def cancel(self, spec: TrialSpec) -> None: ...
