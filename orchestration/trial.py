"""A trial: one resolved config, its work directory, its MLflow run and its job chain.

``trial.yaml`` in the trial directory is the single source of truth a job reads; it is written
atomically before anything is submitted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mugs.checkpoint import atomic_write_text
from mugs.eval import PROTOCOLS

TRIAL_FILE = "trial.yaml"
JOBS_FILE = "jobs.json"
RUN_ID_FILE = "mlflow_run_id"
CANCEL_FILE = "CANCEL_REQUESTED"  # a cancel asked through the trial directory (any host)
PRUNED_FILE = "PRUNED"  # stopped by the sweep's pruner: final, never rerun
EVAL_PROTOCOLS = PROTOCOLS  # knn, linear, pixels (the raw-pixel reference)


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

    @property
    def dir(self) -> Path:
        return Path(self.trial_dir)

    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoint.pth"

    @property
    def config_hash(self) -> str:
        return config_hash(self.config, self.reference)

    def save(self) -> None:
        atomic_write_text(self.dir / TRIAL_FILE, yaml.safe_dump(dataclasses.asdict(self), sort_keys=False))

    @classmethod
    def load(cls, trial_dir: str | Path) -> TrialSpec:
        data = yaml.safe_load((Path(trial_dir) / TRIAL_FILE).read_text())
        return cls(**data)


def read_jobs(trial_dir: str | Path) -> list[dict[str, Any]]:
    p = Path(trial_dir) / JOBS_FILE
    return json.loads(p.read_text()) if p.exists() else []


def write_jobs(trial_dir: str | Path, jobs: list[dict[str, Any]]) -> None:
    atomic_write_text(Path(trial_dir) / JOBS_FILE, json.dumps(jobs, indent=1))
