"""Thin helpers over ``mlflow.MlflowClient``: experiments, runs, status, tags, artifacts.

Every helper takes the tracking URI and uses its own client, never MLflow's global "fluent"
state (``mlflow.set_tracking_uri``, ``mlflow.start_run``), so tests and concurrent jobs in one
process cannot leak runs or URIs into each other. MLflow HTTP calls fail fast (see
:func:`client_for`); an unreachable server raises within seconds.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH, MAX_TAG_VAL_LENGTH

from orchestration import tags as tag_names
from orchestration.tracking.failfast import apply_fail_fast_env
from orchestration.tracking.params import redact
from orchestration.tracking.uri import local_artifact_root

PARENT_RUN_TAG = tag_names.PARENT_RUN
STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")
TERMINAL_STATUSES = frozenset({"FINISHED", "FAILED", "KILLED"})
GIT_TIMEOUT_S = 10.0

_clients: dict[str, MlflowClient] = {}
_clients_lock = threading.Lock()


def client_for(uri: str) -> MlflowClient:
    """The (cached) ``MlflowClient`` bound to ``uri``.

    The first call bounds MLflow's HTTP retries and timeout for this process
    (:func:`~orchestration.tracking.failfast.apply_fail_fast_env`: 0 retries, 5 s), unless
    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``MLFLOW_HTTP_REQUEST_TIMEOUT`` are already set, so that
    no helper here blocks a job for minutes on an unreachable server.
    """
    with _clients_lock:
        client = _clients.get(uri)
        if client is None:
            apply_fail_fast_env()
            client = _clients[uri] = MlflowClient(tracking_uri=uri)
        return client


def get_or_create_experiment(uri: str, name: str) -> str:
    """The id of experiment ``name``, created if missing (restored if it was deleted); a new
    experiment of a sqlite store keeps its artifacts beside the database (:func:`local_artifact_root`)."""
    client = client_for(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        root = local_artifact_root(uri)
        location = (root / hashlib.sha1(name.encode()).hexdigest()[:16]).as_uri() if root else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created concurrently by another process
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _clip(value: str, limit: int, what: str, key: str) -> str:
    if len(value) <= limit:
        return value
    warnings.warn(f"{what} {key!r} truncated to {limit} characters (MLflow's limit)", stacklevel=3)
    return value[:limit]


def create_run(
    uri: str,
    experiment_id: str,
    run_name: str,
    params: Mapping[str, str],
    tags: Mapping[str, str],
    parent_run_id: str | None = None,
) -> str:
    """Create a RUNNING run in ``experiment_id`` and return its id.

    ``params`` (e.g. from :func:`~orchestration.tracking.params.flatten_config`) are logged in
    batches of at most 100; secret-looking keys are dropped (:func:`redact`) and over-long values
    truncated to MLflow's limit. ``parent_run_id`` makes it a nested run (tag
    ``mlflow.parentRunId``). If logging the params fails, the run is marked FAILED and the
    error re-raised.
    """
    client = client_for(uri)
    run_tags = {k: _clip(str(v), MAX_TAG_VAL_LENGTH, "tag", k) for k, v in redact(dict(tags)).items()}
    if parent_run_id:
        run_tags[PARENT_RUN_TAG] = parent_run_id
    run = client.create_run(experiment_id, run_name=run_name, tags=run_tags)
    run_id = run.info.run_id
    try:
        items = [
            Param(k, _clip(str(v), MAX_PARAM_VAL_LENGTH, "param", k)) for k, v in redact(dict(params)).items()
        ]
        for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(run_id, params=chunk, synchronous=True)
    except BaseException:
        try:
            client.set_terminated(run_id, "FAILED")
        except Exception:  # the original error matters more
            pass
        raise
    return run_id


def find_runs(uri: str, experiment_id: str, tags: Mapping[str, str]) -> list[str]:
    """Ids of the experiment's runs carrying all of ``tags`` (values are quoted for the filter)."""
    for k, v in tags.items():
        if "`" in k or "'" in v:
            raise ValueError(f"find_runs: tag {k!r}={v!r} cannot be quoted in a filter")
    clause = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client_for(uri).search_runs([experiment_id], filter_string=clause, max_results=10)
    return [r.info.run_id for r in runs]


def set_status(uri: str, run_id: str, status: str) -> None:
    """Set the run's status: RUNNING (e.g. a resumed run) or FINISHED / FAILED / KILLED (ends it)."""
    status = status.upper()
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    client = client_for(uri)
    if status in TERMINAL_STATUSES:
        client.set_terminated(run_id, status)
    else:
        client.update_run(run_id, status="RUNNING")


def get_status(uri: str, run_id: str) -> str:
    """The run's status string (RUNNING, SCHEDULED, FINISHED, FAILED or KILLED)."""
    return client_for(uri).get_run(run_id).info.status


def set_tags(uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    """Set (or overwrite) tags on a run; secret-looking keys are dropped."""
    items = [RunTag(k, _clip(str(v), MAX_TAG_VAL_LENGTH, "tag", k)) for k, v in redact(dict(tags)).items()]
    client = client_for(uri)
    for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=chunk, synchronous=True)


def log_artifact(uri: str, run_id: str, path: Path, artifact_path: str | None = None) -> None:
    """Upload a file (or a directory's content) to the run's artifacts, under ``artifact_path``."""
    path = Path(path)
    client = client_for(uri)
    if path.is_dir():
        client.log_artifacts(run_id, str(path), artifact_path)
    else:
        client.log_artifact(run_id, str(path), artifact_path)


def _git(repo_root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo_root), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def run_tags_for_environment(repo_root: Path | None = None) -> dict[str, str]:
    """Tags that say where and from what code a run ran.

    ``mugs.host``, ``mugs.version`` (``mugs.__version__``), ``mugs.git_commit`` and
    ``mugs.git_dirty`` (``"true"``/``"false"``) of ``repo_root`` (default: the checkout holding
    the ``mugs`` package). Without git or outside a repository, the git tags are ``"unknown"``.
    """
    import mugs

    if repo_root is None:
        repo_root = Path(mugs.__file__).resolve().parent.parent
    commit = _git(repo_root, "rev-parse", "HEAD")
    status = _git(repo_root, "status", "--porcelain") if commit else None
    return {
        tag_names.HOST: socket.gethostname(),
        tag_names.VERSION: mugs.__version__,
        tag_names.GIT_COMMIT: commit.strip() if commit else "unknown",
        tag_names.GIT_DIRTY: "unknown" if status is None else ("true" if status.strip() else "false"),
    }
