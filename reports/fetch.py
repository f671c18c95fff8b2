"""Read one sweep from MLflow: its parent run, spec and trial list, and its trial runs as pandas.

The schema (written by the sweep runner): the parent run has tags ``mugs.sweep=<name>``,
``mugs.role=sweep``, ``mugs.axes`` (JSON list of swept dotted keys), ``mugs.sweep_state`` and
``mugs.trials_expected``, and artifacts ``spec.yaml`` and ``trials.csv``. Each trial is a child
run (tag ``mlflow.parentRunId``) whose params are the flattened config as strings; the sweep's
reference trials carry ``mugs.reference`` (:data:`orchestration.reference.REFERENCE_TAG`).

Runs are read with ``MlflowClient.search_runs`` filtered by tag, in pages of
:data:`PAGE_SIZE`; metric histories (training curves) only for the few runs that are plotted,
concurrently.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException

from orchestration import tags
from orchestration.reference import REFERENCE_COLUMN, REFERENCE_TAG
from reports.fetch_sql import (
    PRUNED_TAG,
    is_database_uri,
    read_children,
    read_histories,
    run_status,
    verify_sample,
)
from reports.values import parse_value

PARENT_RUN_TAG = tags.PARENT_RUN
SWEEP_TAG = tags.SWEEP
ROLE_TAG = tags.ROLE
AXES_TAG = tags.AXES
STATE_TAG = tags.SWEEP_STATE
EXPECTED_TAG = tags.TRIALS_EXPECTED
TRIAL_ID_TAG = tags.TRIAL_ID
CONFIG_HASH_TAG = tags.CONFIG_HASH
SETTING_HASH_TAG = tags.SETTING_HASH
SPEC_ARTIFACT = "spec.yaml"
TRIALS_ARTIFACT = "trials.csv"

PAGE_SIZE = 10_000
PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
MIN_TIMEOUT_S = 120
MIN_RETRIES = 2
HISTORY_WORKERS = 8


class SweepNotFoundError(LookupError):
    """No parent run with ``mugs.role=sweep`` and ``mugs.sweep=<name>`` exists."""


@dataclass
class SweepData:
    """Everything a report needs about one sweep.

    ``runs`` has one row per trial run: ``run_id``, ``run_name``, ``status``, ``trial_id``,
    ``config_hash``, ``setting_hash``, ``reference`` (the kind, None for a sweep trial),
    ``start_time`` (ms), ``params.<key>`` (parsed with
    :func:`reports.values.parse_value`) and ``metrics.<key>`` (latest value). ``trials`` is the
    parent's ``trials.csv`` (strings), or None when the artifact is missing.
    """

    name: str
    parent_id: str
    experiment_id: str
    tags: dict[str, str]
    axes: list[str]
    state: str
    trials_expected: int | None
    spec: dict[str, Any]
    trials: pd.DataFrame | None
    runs: pd.DataFrame
    fetch_seconds: float = 0.0
    fetch_method: str = "api"
    notes: list[str] = field(default_factory=list)


def _quote(value: str) -> str | None:
    """``value`` as an MLflow filter string literal, or None if it cannot be quoted."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def _experiment_ids(client: MlflowClient) -> list[str]:
    ids: list[str] = []
    token = None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        ids.extend(e.experiment_id for e in page)
        token = page.token
        if not token:
            return ids


def search_all(client: MlflowClient, experiment_ids: Sequence[str], filter_string: str) -> list[Run]:
    """Every active run matching ``filter_string`` (all pages of ``PAGE_SIZE``)."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            list(experiment_ids),
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=PAGE_SIZE,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_parent(client: MlflowClient, sweep: str) -> Run:
    """The sweep's parent run (the most recently started one if several share the name)."""
    return find_parents(client, sweep)[0]


def find_parents(client: MlflowClient, sweep: str) -> list[Run]:
    """All parent runs of sweep ``sweep``, most recently started first (never empty)."""
    experiment_ids = _experiment_ids(client)
    if not experiment_ids:
        raise SweepNotFoundError(f"no sweep named {sweep!r}: the tracking store has no experiments")
    quoted = _quote(sweep)
    role = f"tags.`{ROLE_TAG}` = 'sweep'"
    filter_string = f"{role} AND tags.`{SWEEP_TAG}` = {quoted}" if quoted else role
    candidates = [
        r for r in search_all(client, experiment_ids, filter_string) if r.data.tags.get(SWEEP_TAG) == sweep
    ]
    if not candidates:
        raise SweepNotFoundError(
            f"no sweep named {sweep!r} (no run with tags {ROLE_TAG}=sweep, {SWEEP_TAG}={sweep})"
        )
    return sorted(candidates, key=lambda r: r.info.start_time or 0, reverse=True)


def _artifact_text(client: MlflowClient, run_id: str, path: str, present: set[str]) -> str | None:
    if path not in present:
        return None
    with tempfile.TemporaryDirectory(prefix="mugs-report-") as tmp, _quiet_downloads():
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError):
            return None
        return Path(local).read_text(encoding="utf-8", errors="replace")


@contextmanager
def patient_http(min_timeout_s: int = MIN_TIMEOUT_S, min_retries: int = MIN_RETRIES) -> Iterator[None]:
    """Within the block, MLflow HTTP calls wait at least ``min_timeout_s`` and retry ``min_retries``.

    Training jobs bound MLflow's HTTP client to fail fast (``orchestration.tracking``: 5 s, no
    retry), process-wide; one page of a large sweep's ``search_runs`` can take longer than that.
    Lower values are raised for the block and restored after it; higher ones are kept.
    """
    saved = {name: os.environ.get(name) for name in (TIMEOUT_ENV, RETRIES_ENV)}
    for name, minimum in ((TIMEOUT_ENV, min_timeout_s), (RETRIES_ENV, min_retries)):
        try:
            current = int(saved[name]) if saved[name] else None
        except ValueError:
            current = None
        if current is not None and current < minimum:
            os.environ[name] = str(minimum)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No tqdm bar for two small files (unless the user set ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``)."""
    if PROGRESS_ENV in os.environ:
        yield
        return
    os.environ[PROGRESS_ENV] = "false"
    try:
        yield
    finally:
        os.environ.pop(PROGRESS_ENV, None)


def _parent_artifacts(
    client: MlflowClient, run_id: str
) -> tuple[dict[str, Any], pd.DataFrame | None, list[str]]:
    notes: list[str] = []
    try:
        present = {f.path for f in client.list_artifacts(run_id)}
    except (MlflowException, OSError) as exc:
        return {}, None, [f"could not list the sweep's artifacts: {exc}"]
    spec: dict[str, Any] = {}
    spec_text = _artifact_text(client, run_id, SPEC_ARTIFACT, present)
    if spec_text is None:
        notes.append(f"the sweep has no {SPEC_ARTIFACT} artifact")
    else:
        try:
            loaded = yaml.safe_load(spec_text)
        except yaml.YAMLError as exc:
            notes.append(f"{SPEC_ARTIFACT} is not valid YAML: {exc}")
            loaded = None
        spec = loaded if isinstance(loaded, dict) else {}
    trials = None
    csv_text = _artifact_text(client, run_id, TRIALS_ARTIFACT, present)
    if csv_text is None:
        notes.append(f"the sweep has no {TRIALS_ARTIFACT} artifact: missing trials cannot be listed")
    else:
        try:
            trials = pd.read_csv(io.StringIO(csv_text), dtype=str, keep_default_na=False)
        except (ValueError, pd.errors.ParserError) as exc:
            notes.append(f"{TRIALS_ARTIFACT} could not be read: {exc}")
    return spec, trials, notes


def _parse_axes(text: str | None, spec: dict[str, Any]) -> list[str]:
    if text:
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, list):
            return [str(v) for v in value]
    for key in ("axes", "grid"):  # fall back to the spec's swept keys
        value = spec.get(key)
        if isinstance(value, dict):
            return [str(k) for k in value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    return []


def runs_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per run: identity, status, tags of interest, parsed params and latest metrics."""
    records = []
    for run in runs:
        tags = run.data.tags
        record: dict[str, Any] = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run_status(run.info.status, tags.get(PRUNED_TAG)),
            "trial_id": tags.get(TRIAL_ID_TAG),
            "config_hash": tags.get(CONFIG_HASH_TAG),
            "setting_hash": tags.get(SETTING_HASH_TAG),
            REFERENCE_COLUMN: tags.get(REFERENCE_TAG),
            "start_time": run.info.start_time,
        }
        for key, value in run.data.params.items():
            record[f"params.{key}"] = parse_value(value)
        for key, value in run.data.metrics.items():
            record[f"metrics.{key}"] = value
        records.append(record)
    columns = ["run_id", "run_name", "status", "trial_id", "config_hash", "setting_hash", REFERENCE_COLUMN]
    columns.append("start_time")
    frame = pd.DataFrame.from_records(records)
    return frame if records else pd.DataFrame(columns=columns)


def _dedupe_trials(frame: pd.DataFrame) -> pd.DataFrame:
    """One run per trial id: a FINISHED one if any, else the most recently started."""
    if frame.empty or frame["trial_id"].isna().all():
        return frame
    with_id = frame[frame["trial_id"].notna()].copy()
    with_id["_finished"] = with_id["status"].eq("FINISHED")
    with_id = with_id.sort_values(["_finished", "start_time"], ascending=[False, False], kind="stable")
    kept = with_id.drop_duplicates("trial_id", keep="first").drop(columns="_finished")
    return pd.concat([kept, frame[frame["trial_id"].isna()]]).sort_values("start_time", kind="stable")


def _children(
    client: MlflowClient, tracking_uri: str, parent: Run, fast_path: bool, notes: list[str]
) -> tuple[pd.DataFrame, str]:
    """The parent's child runs as a frame, and how they were read (``sql`` or ``api``)."""
    parent_id, experiment_id = parent.info.run_id, parent.info.experiment_id
    if fast_path and is_database_uri(tracking_uri):
        try:
            frame = read_children(tracking_uri, experiment_id, parent_id)
            verify_sample(frame, client)
            return frame, "sql"
        except Exception as exc:  # any schema or driver surprise: the API is always right
            notes.append(f"fast SQL read not used ({type(exc).__name__}: {exc}); read with search_runs")
    runs = search_all(client, [experiment_id], f"tags.`{PARENT_RUN_TAG}` = '{parent_id}'")
    return runs_frame(runs), "api"


def fetch_sweep(tracking_uri: str, sweep: str, fast_path: bool = True) -> SweepData:
    """Read sweep ``sweep`` from the store at ``tracking_uri``; raises :class:`SweepNotFoundError`.

    With ``fast_path`` and a database tracking URI, the trial runs are read with plain SQL
    (:mod:`reports.fetch_sql`, checked against the API); otherwise with ``search_runs``.
    """
    start = time.perf_counter()
    client = MlflowClient(tracking_uri=tracking_uri)
    parents = find_parents(client, sweep)
    parent = parents[0]
    parent_id = parent.info.run_id
    spec, trials, notes = _parent_artifacts(client, parent_id)
    if len(parents) > 1:
        notes.append(
            f"{len(parents)} sweeps are named {sweep!r}; reporting the latest (parent run {parent_id})"
        )
    tags = dict(parent.data.tags)
    frame, method = _children(client, tracking_uri, parent, fast_path, notes)
    deduped = _dedupe_trials(frame)
    if len(deduped) < len(frame):
        notes.append(f"{len(frame) - len(deduped)} superseded run(s) of retried trials ignored")
    expected_text = tags.get(EXPECTED_TAG, "")
    try:
        expected: int | None = int(expected_text)
    except ValueError:
        expected = None
    return SweepData(
        name=sweep,
        parent_id=parent_id,
        experiment_id=parent.info.experiment_id,
        tags=tags,
        axes=_parse_axes(tags.get(AXES_TAG), spec),
        state=tags.get(STATE_TAG, "unknown").strip().lower() or "unknown",
        trials_expected=expected,
        spec=spec,
        trials=trials,
        runs=deduped.reset_index(drop=True),
        fetch_seconds=time.perf_counter() - start,
        fetch_method=method,
        notes=notes,
    )


def fetch_histories(
    tracking_uri: str, run_ids: Sequence[str], key: str = "train/loss", fast_path: bool = False
) -> dict[str, pd.DataFrame]:
    """Metric ``key``'s history (columns ``step``, ``value``) of each run that has one.

    With ``fast_path`` (a database URI whose runs were read with SQL) one SELECT; otherwise
    ``get_metric_history`` per run, concurrently. A failing fast path falls back to the API.
    """
    if fast_path and is_database_uri(tracking_uri):
        try:
            return read_histories(tracking_uri, run_ids, key)
        except Exception:  # schema or driver surprise: use the API
            pass
    client = MlflowClient(tracking_uri=tracking_uri)

    def one(run_id: str) -> tuple[str, pd.DataFrame | None]:
        try:
            points = client.get_metric_history(run_id, key)
        except MlflowException:
            return run_id, None
        if not points:
            return run_id, None
        frame = pd.DataFrame({"step": [p.step for p in points], "value": [p.value for p in points]})
        return run_id, frame.sort_values("step", kind="stable").drop_duplicates("step", keep="last")

    if not run_ids:
        return {}
    with ThreadPoolExecutor(max_workers=min(HISTORY_WORKERS, len(run_ids))) as pool:
        results = list(pool.map(one, run_ids))
    return {run_id: frame for run_id, frame in results if frame is not None}
