"""The one shared submit path: resolve -> create the trial directory and MLflow run -> submit."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from mugs.config import ConfigError, MugsConfig
from orchestration import tags, tracking
from orchestration.backends import Backend
from orchestration.backends.slurm import check_name
from orchestration.failpoints import failpoint
from orchestration.trial import TrialPaths, TrialSpec, config_hash


def absolutize_paths(cfg: MugsConfig) -> None:
    """Jobs may run in another directory (code snapshot): make data paths absolute."""
    if cfg.data.root:
        cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())


def new_trial_id(cfg: MugsConfig, name: str | None) -> str:
    """``<name or preset>-<time>-<config hash>``; the name must be one safe word (SlurmInputError)."""
    stem = check_name(name, "--name") if name else check_name(cfg.preset or "trial", "preset")
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{config_hash(cfg.to_dict())[:6]}"


def _trial_dir(workdir: Path, trial_id: str) -> Path:
    """``<workdir>/trials/<trial_id>``, refused (ConfigError) unless it is directly under trials/."""
    root = (workdir / "trials").resolve()
    trial_dir = (root / trial_id).resolve()
    if Path(trial_id).name != trial_id or trial_id in ("", ".", "..") or trial_dir.parent != root:
        raise ConfigError(f"trial id {trial_id!r}: its directory {trial_dir} is not directly under {root}")
    return trial_dir


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
    trial_dir = _trial_dir(workdir, trial_id)  # before anything is created
    trial_dir.mkdir(parents=True, exist_ok=True)
    if TrialPaths(trial_dir).spec.exists():  # an earlier attempt got this far: finish its work
        spec = TrialSpec.load(trial_dir)
        if spec.run_id:
            return spec
    else:
        spec = TrialSpec(
            trial_id=trial_id,
            trial_dir=str(trial_dir),
            config=cfg.to_dict(),
            evals=list(evals),
            tracking_uri=tracking_uri,
            experiment=experiment,
            sweep=sweep,
            parent_run_id=parent_run_id,
            max_requeues=max_requeues,
            backend=backend,
            reference=reference,
            claim=uuid.uuid4().hex,
        )
        spec.save()  # before the run exists: a kill from here on leaves a claim the rerun resumes
        failpoint("trial:claimed")
    run_tags = {
        **tracking.run_tags_for_environment(),
        tags.TRIAL_ID: trial_id,
        tags.CONFIG_HASH: spec.config_hash,
        tags.BACKEND: backend,
        tags.PRESET: cfg.preset or "",
        tags.EVALS: ",".join(evals),
        tags.REQUEUE_COUNT: "0",
        **(extra_tags or {}),
    }
    if sweep:
        run_tags[tags.SWEEP] = sweep
    if reference:
        run_tags[tags.REFERENCE] = reference
    _attach_run(spec, run_tags)
    return spec


def _attach_run(spec: TrialSpec, run_tags: dict[str, str]) -> None:
    """Create the trial's run, or adopt the one an interrupted attempt created (found by its claim
    tag), and record its id in trial.yaml (atomically)."""
    experiment_id = tracking.get_or_create_experiment(spec.tracking_uri, spec.experiment)
    claim = spec.claim or uuid.uuid4().hex
    found = tracking.find_runs(spec.tracking_uri, experiment_id, {tags.CLAIM: claim}) if spec.claim else []
    if found:
        spec.run_id = found[0]
    else:
        spec.claim = claim
        spec.run_id = tracking.create_run(
            spec.tracking_uri,
            experiment_id,
            spec.trial_id,
            tracking.flatten_config(spec.config),
            {**run_tags, tags.CLAIM: claim},
            parent_run_id=spec.parent_run_id,
        )
        failpoint("trial:run_created")
    spec.save()


def submit_trial(spec: TrialSpec, backend: Backend, wait: bool) -> list[dict[str, Any]]:
    try:
        jobs = backend.submit(spec, wait=wait)
    except Exception as e:
        if spec.run_id:
            tracking.set_tags(
                spec.tracking_uri, spec.run_id, {tags.FAILURE_REASON: f"submission failed: {e}"}
            )
            tracking.set_status(spec.tracking_uri, spec.run_id, "FAILED")
        raise
    ids = {f"{j['kind'] if j['kind'] == 'pretrain' else j['protocol']}": j["job_id"] for j in jobs}
    if spec.run_id and backend.name == "slurm":
        tracking.set_tags(
            spec.tracking_uri, spec.run_id, {tags.SLURM_JOB_ID.format(job=k): v for k, v in ids.items()}
        )
    return jobs
