"""A trial: one resolved config, its work directory, its MLflow run and its job chain.

``trial.yaml`` in the trial directory is the single source of truth a job reads; it is written
atomically before anything is submitted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TypedDict

import yaml

from mugs.atomic import CHECKPOINT_NAME, atomic_write_text
from mugs.eval import PROTOCOLS

TRIAL_FILE = "trial.yaml"
JOBS_FILE = "jobs.json"
RUN_ID_FILE = "mlflow_run_id"
CANCEL_FILE = "CANCEL_REQUESTED"  # a cancel asked through the trial directory (any host)
PRUNED_FILE = "PRUNED"  # stopped by the sweep's pruner: final, never rerun
PRETRAINED_FILE = "PRETRAINED"  # pretraining completed (holds the last step)
FAILED_FILE = "FAILED"  # a job of the trial failed (holds the reason)
CANCELLED_FILE = "CANCELLED"  # the pretraining task stopped on a cancel (holds the reason)
METRICS_FILE = "metrics.jsonl"
EVAL_PROTOCOLS = PROTOCOLS  # knn, linear, pixels (the raw-pixel reference)


@dataclass(frozen=True)
class TrialPaths:
    """Every file of a trial directory, named once (after submitit's ``JobPaths``)."""

    dir: Path

    @property
    def spec(self) -> Path:
        return self.dir / TRIAL_FILE

    @property
    def jobs(self) -> Path:
        return self.dir / JOBS_FILE

    @property
    def run_id(self) -> Path:
        return self.dir / RUN_ID_FILE

    @property
    def cancel_request(self) -> Path:
        return self.dir / CANCEL_FILE

    @property
    def pruned(self) -> Path:
        return self.dir / PRUNED_FILE

    @property
    def pretrained(self) -> Path:
        return self.dir / PRETRAINED_FILE

    @property
    def failed(self) -> Path:
        return self.dir / FAILED_FILE

    @property
    def cancelled(self) -> Path:
        return self.dir / CANCELLED_FILE

    @property
    def metrics(self) -> Path:
        return self.dir / METRICS_FILE

    @property
    def checkpoint(self) -> Path:
        return self.dir / CHECKPOINT_NAME

    @property
    def spool(self) -> Path:
        """Metrics MLflow did not take yet (delivered by a later attempt or ``mugs-orch sync``)."""
        return self.dir / "mlflow_spool.jsonl"

    @property
    def starts(self) -> Path:
        """One line per start of pretraining: time, pid, attempt, host."""
        return self.dir / "pretrain_starts.log"

    @property
    def config(self) -> Path:
        """The resolved config as the trainer ran it."""
        return self.dir / "config.yaml"

    @property
    def snapshot(self) -> Path:
        """Holds the path of the code snapshot the trial's SLURM jobs run."""
        return self.dir / "snapshot"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def runner_pid(self) -> Path:
        return self.dir / "runner.pid"

    @property
    def heartbeat(self) -> Path:
        return self.dir / "runner.heartbeat"

    def eval_result(self, protocol: str) -> Path:
        return self.dir / f"eval_{protocol}.json"


class TrialState(str, Enum):
    """The one vocabulary of where a trial stands (driver, status, backends, trials.csv, reports).

    Written by: the driver (NEW -> PENDING when it writes trial.yaml and claims the trial), the
    pretraining task (RUNNING once steps are logged; PRETRAINED marker -> EVALUATING), the eval
    tasks (every result written -> DONE), any task that fails (FAILED marker), the pruner (PRUNED
    marker). STOPPED is read, never written: the trial is not finished and nothing of it runs
    (no live runner, no unfinished SLURM job), so a rerun resumes it.
    """

    NEW = "new"  # no trial.yaml yet
    PENDING = "pending"  # claimed (trial.yaml written, jobs submitted or about to be); no step logged
    RUNNING = "running"  # pretraining has logged steps
    EVALUATING = "evaluating"  # pretraining done; evaluations outstanding
    STOPPED = "stopped"  # interrupted, nothing running: resumable
    DONE = "done"  # pretrained and every evaluation written
    FAILED = "failed"  # a job failed; a resumed sweep runs it again
    PRUNED = "pruned"  # stopped by the sweep's pruner: final, never rerun

    def __str__(self) -> str:
        return self.value

    __hash__ = str.__hash__  # interchangeable with its value in sets and dict keys (trials.csv)

    @property
    def ended(self) -> bool:
        """Nothing more happens to it in this invocation (done, failed or pruned)."""
        return self in (TrialState.DONE, TrialState.FAILED, TrialState.PRUNED)

    @property
    def in_flight(self) -> bool:
        return self in (TrialState.PENDING, TrialState.RUNNING, TrialState.EVALUATING)

    @property
    def run_status(self) -> str:
        """The MLflow run status that goes with it (a STOPPED trial's run is ended KILLED)."""
        return _RUN_STATUS[self]


_RUN_STATUS = {
    TrialState.NEW: "RUNNING",
    TrialState.PENDING: "RUNNING",
    TrialState.RUNNING: "RUNNING",
    TrialState.EVALUATING: "RUNNING",
    TrialState.STOPPED: "KILLED",
    TrialState.DONE: "FINISHED",
    TrialState.FAILED: "FAILED",
    TrialState.PRUNED: "KILLED",
}


def is_pruned(trial_dir: str | Path) -> bool:
    return TrialPaths(Path(trial_dir)).pruned.exists()


def file_state(trial_dir: str | Path) -> TrialState:
    """Where the trial stands from its files alone (no scheduler call, no liveness check): an
    interrupted trial reads PENDING or RUNNING here; :func:`orchestration.sweeps.trial_state.classify`
    tells those from STOPPED."""
    paths = TrialPaths(Path(trial_dir))
    if not paths.spec.exists():
        return TrialState.NEW
    if paths.pruned.exists():
        return TrialState.PRUNED
    if paths.failed.exists():
        return TrialState.FAILED
    if paths.pretrained.exists():
        evals = TrialSpec.load(paths.dir).evals
        done = all(paths.eval_result(p).exists() for p in evals)
        return TrialState.DONE if done else TrialState.EVALUATING
    return TrialState.RUNNING if paths.metrics.exists() else TrialState.PENDING


def config_hash(config: dict[str, Any], reference: str | None = None) -> str:
    """Stable hash of a resolved config (seed included); a reference trial's kind is hashed too,
    so a reference never shares its hash with a trial of the same config."""
    keyed = config if reference is None else {"config": config, "reference": reference}
    blob = json.dumps(keyed, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class TrialSpec:
    trial_id: str
    trial_dir: str
    config: dict[str, Any]
    evals: list[str] = field(default_factory=lambda: ["knn"])
    tracking_uri: str = ""
    experiment: str = "mugs"
    run_id: str | None = None
    parent_run_id: str | None = None
    sweep: str | None = None
    max_requeues: int = 3
    backend: str = "local"
    reference: str | None = None  # orchestration.reference.UNTRAINED: pretraining runs 0 steps
    claim: str | None = None  # tag of the MLflow run made for it: a rerun finds that run by it

    @property
    def dir(self) -> Path:
        return Path(self.trial_dir)

    @property
    def paths(self) -> TrialPaths:
        return TrialPaths(self.dir)

    @property
    def checkpoint(self) -> Path:
        return self.paths.checkpoint

    @property
    def config_hash(self) -> str:
        return config_hash(self.config, self.reference)

    def save(self) -> None:
        atomic_write_text(self.dir / TRIAL_FILE, yaml.safe_dump(dataclasses.asdict(self), sort_keys=False))
        if self.run_id:
            atomic_write_text(self.paths.run_id, self.run_id + "\n")

    @classmethod
    def load(cls, trial_dir: str | Path) -> TrialSpec:
        data = yaml.safe_load((Path(trial_dir) / TRIAL_FILE).read_text())
        return cls(**data)


class JobRecord(TypedDict, total=False):
    """One job of a trial's chain, as jobs.json holds it (the states are SLURM's vocabulary,
    :data:`orchestration.backends.base.TERMINAL`; the local runner uses the same words)."""

    kind: Literal["pretrain", "eval"]
    protocol: str | None  # the evaluation protocol (None for pretraining)
    job_id: str  # the SLURM job id (array: ID_TASK), or local-<kind>
    state: str  # PENDING RUNNING REQUEUED COMPLETED FAILED CANCELLED TIMEOUT ...
    exit_code: str  # "code:signal" as sacct writes it, or a reason
    start: str  # local runner: epoch seconds
    end: str
    attempt: str  # local runner: requeue count of the running attempt
    claim: str  # SUBMITTING: "<job name>#<array index>", how a rerun finds a submission it never recorded


def job_record(kind: Literal["pretrain", "eval"], job_id: str, protocol: str | None = None) -> JobRecord:
    """A freshly submitted job."""
    return {"kind": kind, "protocol": protocol, "job_id": job_id, "state": "PENDING", "exit_code": ""}


SUBMITTING = "SUBMITTING"  # a claim: sbatch is about to run, the job ids are not known yet


def claim_record(job_name: str, index: int) -> JobRecord:
    """What jobs.json holds while a SLURM submission is in flight (written before sbatch)."""
    return {"kind": "pretrain", "protocol": None, "job_id": "", "state": SUBMITTING, "exit_code": "",
            "claim": f"{job_name}#{index}"}  # fmt: skip


def chain_records(spec: TrialSpec, pretrain_id: str, eval_ids: dict[str, str]) -> list[JobRecord]:
    """The trial's chain: pretraining, then its evaluations in ``spec.evals`` order."""
    evals = [job_record("eval", eval_ids[p], p) for p in spec.evals if p in eval_ids]
    return [job_record("pretrain", pretrain_id), *evals]


def read_jobs(trial_dir: str | Path) -> list[JobRecord]:
    p = Path(trial_dir) / JOBS_FILE
    return json.loads(p.read_text()) if p.exists() else []


def write_jobs(trial_dir: str | Path, jobs: list[JobRecord]) -> None:
    atomic_write_text(Path(trial_dir) / JOBS_FILE, json.dumps(jobs, indent=1))


def update_job(trial_dir: str | Path, idx: int, **fields: str) -> None:
    """Set fields of job ``idx`` in jobs.json (one writer at a time: the local runner or its child)."""
    jobs = read_jobs(trial_dir)
    jobs[idx].update(fields)  # type: ignore[typeddict-item]
    write_jobs(trial_dir, jobs)
