"""The one shared submit path: resolve -> create the trial directory and MLflow run -> submit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mugs.config import MugsConfig
from orchestration import tracking
from orchestration.backends import Backend
from orchestration.reference import REFERENCE_TAG
from orchestration.trial import TrialSpec, config_hash


def absolutize_paths(cfg: MugsConfig) -> None:
    """Jobs may run in another directory (code snapshot): make data paths absolute."""
    if cfg.data.root:
        cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())


def new_trial_id(cfg: MugsConfig, name: str | None) -> str:
    stem = name or cfg.preset or "trial"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{config_hash(cfg.to_dict())[:6]}"


def prepare_trial(
    cfg: MugsConfig,
    workdir: Path,
    tracking_uri: str,
    trial_id: str,
    evals: list[str],
    backend: str,
    experiment: str = "mugs",
    max_requeues: int = 3,
    sweep: str | None = None,
    parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
    reference: str | None = None,
) -> TrialSpec:
    """Create the trial directory, its MLflow run (params = resolved config) and trial.yaml.

    ``reference`` (:data:`orchestration.reference.UNTRAINED`) makes it a reference trial: 0
    pretraining steps, tagged ``mugs.reference``.
    """
    trial_dir = (workdir / "trials" / trial_id).resolve()
    trial_dir.mkdir(parents=True, exist_ok=True)
    config = cfg.to_dict()
    spec = TrialSpec(
        trial_id=trial_id,
        trial_dir=str(trial_dir),
        config=config,
        evals=list(evals),
        tracking_uri=tracking_uri,
        experiment=experiment,
        sweep=sweep,
        parent_run_id=parent_run_id,
        max_requeues=max_requeues,
        backend=backend,
        reference=reference,
    )
    tags = {
        **tracking.run_tags_for_environment(),
        "mugs.trial_id": trial_id,
        "mugs.config_hash": spec.config_hash,
        "mugs.backend": backend,
        "mugs.preset": cfg.preset or "",
        "mugs.evals": ",".join(evals),
        "mugs.requeue_count": "0",
        **(extra_tags or {}),
    }
    if sweep:
        tags["mugs.sweep"] = sweep
    if reference:
        tags[REFERENCE_TAG] = reference
    experiment_id = tracking.get_or_create_experiment(tracking_uri, experiment)
    spec.run_id = tracking.create_run(
        tracking_uri,
        experiment_id,
        trial_id,
        tracking.flatten_config(config),
        tags,
        parent_run_id=parent_run_id,
    )
    (trial_dir / "mlflow_run_id").write_text(spec.run_id + "\n")
    spec.save()
    return spec


def submit_trial(spec: TrialSpec, backend: Backend, wait: bool) -> list[dict[str, Any]]:
    try:
        jobs = backend.submit(spec, wait=wait)
    except Exception as e:
        if spec.run_id:
            tracking.set_tags(
                spec.tracking_uri, spec.run_id, {"mugs.failure_reason": f"submission failed: {e}"}
            )
            tracking.set_status(spec.tracking_uri, spec.run_id, "FAILED")
        raise
    ids = {f"{j['kind'] if j['kind'] == 'pretrain' else j['protocol']}": j["job_id"] for j in jobs}
    if spec.run_id and backend.name == "slurm":
        tracking.set_tags(spec.tracking_uri, spec.run_id, {f"slurm.{k}_job_id": v for k, v in ids.items()})
    return jobs
