"""Fast path for SQL tracking stores: a sweep's trial runs read with four SELECTs instead of the ORM.

``MlflowClient.search_runs`` on a SQL store builds one ORM object per param, tag and metric;
for 10,000 runs with ~70 params that is ~800,000 objects and half a minute. When the tracking
URI is a database URI (sqlite, postgresql, mysql, mssql) this module reads the same columns
from MLflow's tables (the table objects of ``mlflow.store.tracking.dbmodels.models``, so column
names follow the installed MLflow) read-only, and pivots them with pandas.

The result is checked against ``MlflowClient.get_run`` for one run; on any error or mismatch
the caller falls back to ``search_runs`` (see :func:`reports.fetch.fetch_sweep`).
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa
from mlflow import MlflowClient

from orchestration import tags
from orchestration.reference import REFERENCE_COLUMN, REFERENCE_TAG
from reports.values import parse_value

DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
PRUNED_TAG = tags.PRUNED
RUN_TAGS = {
    PRUNED_TAG: "pruned",
    tags.TRIAL_ID: "trial_id",
    tags.CONFIG_HASH: "config_hash",
    tags.SETTING_HASH: "setting_hash",
    REFERENCE_TAG: REFERENCE_COLUMN,
}
RUN_NAME_TAG = tags.RUN_NAME
PARENT_RUN_TAG = tags.PARENT_RUN


class FastPathMismatchError(RuntimeError):
    """The SQL read disagrees with the MLflow API for a sampled run."""


def is_database_uri(uri: str) -> bool:
    """True for ``sqlite:///...``, ``postgresql+psycopg2://...`` and the like."""
    scheme = urllib.parse.urlparse(uri).scheme
    return scheme.split("+", 1)[0] in DATABASE_SCHEMES


def read_histories(uri: str, run_ids: Sequence[str], key: str) -> dict[str, pd.DataFrame]:
    """Metric ``key``'s history (``step``, ``value``; last value per step) of each run, one SELECT."""
    from mlflow.store.tracking.dbmodels.models import SqlMetric

    if not run_ids:
        return {}
    metrics_t = SqlMetric.__table__
    statement = sa.select(
        metrics_t.c.run_uuid, metrics_t.c.step, metrics_t.c.timestamp, metrics_t.c.value, metrics_t.c.is_nan
    ).where(metrics_t.c.run_uuid.in_(list(run_ids)), metrics_t.c.key == key)
    engine = sa.create_engine(uri)
    try:
        with engine.connect() as conn:
            rows = _rows(conn, statement)
    finally:
        engine.dispose()
    frame = pd.DataFrame(rows, columns=["run_id", "step", "timestamp", "value", "is_nan"])
    frame["value"] = frame["value"].astype(float).where(~frame["is_nan"].astype(bool), float("nan"))
    frame = frame.sort_values(["run_id", "step", "timestamp"], kind="stable")
    out = {}
    for run_id, group in frame.groupby("run_id", sort=False):
        history = group.drop_duplicates("step", keep="last")[["step", "value"]].reset_index(drop=True)
        out[str(run_id)] = history
    return out


def _tables() -> tuple[sa.Table, sa.Table, sa.Table, sa.Table]:
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlRun, SqlTag

    return SqlRun.__table__, SqlTag.__table__, SqlParam.__table__, SqlLatestMetric.__table__


def read_children(uri: str, experiment_id: str, parent_id: str) -> pd.DataFrame:
    """The parent's active child runs in the layout of :func:`reports.fetch.runs_frame`."""
    runs_t, tags_t, params_t, latest_t = _tables()
    children = sa.select(tags_t.c.run_uuid).where(tags_t.c.key == PARENT_RUN_TAG, tags_t.c.value == parent_id)
    engine = sa.create_engine(uri)
    try:
        with engine.connect() as conn:
            runs = pd.DataFrame(
                _rows(
                    conn,
                    sa.select(runs_t.c.run_uuid, runs_t.c.name, runs_t.c.status, runs_t.c.start_time).where(
                        runs_t.c.run_uuid.in_(children),
                        runs_t.c.experiment_id == int(experiment_id),
                        runs_t.c.lifecycle_stage == "active",
                    ),
                ),
                columns=["run_id", "run_name", "status", "start_time"],
            )
            tags = pd.DataFrame(
                _rows(
                    conn,
                    sa.select(tags_t.c.run_uuid, tags_t.c.key, tags_t.c.value).where(
                        tags_t.c.run_uuid.in_(children), tags_t.c.key.in_([*RUN_TAGS, RUN_NAME_TAG])
                    ),
                ),
                columns=["run_id", "key", "value"],
            )
            params = pd.DataFrame(
                _rows(
                    conn,
                    sa.select(params_t.c.run_uuid, params_t.c.key, params_t.c.value).where(
                        params_t.c.run_uuid.in_(children)
                    ),
                ),
                columns=["run_id", "key", "value"],
            )
            metrics = pd.DataFrame(
                _rows(
                    conn,
                    sa.select(latest_t.c.run_uuid, latest_t.c.key, latest_t.c.value, latest_t.c.is_nan).where(
                        latest_t.c.run_uuid.in_(children)
                    ),
                ),
                columns=["run_id", "key", "value", "is_nan"],
            )
    finally:
        engine.dispose()
    return _assemble(runs, tags, params, metrics)


def _rows(conn: sa.Connection, statement: sa.Select) -> list[tuple]:
    """All rows as plain tuples, fetched from the DB-API cursor (no per-row ``Row`` objects)."""
    result = conn.execute(statement)
    try:
        return [tuple(row) for row in result.cursor.fetchall()]
    finally:
        result.close()


def _pivot(long: pd.DataFrame, prefix: str, index: pd.Index) -> pd.DataFrame:
    if long.empty:
        return pd.DataFrame(index=index)
    wide = long.pivot(index="run_id", columns="key", values="value").reindex(index)
    wide.columns = [f"{prefix}{c}" for c in wide.columns]
    return wide


def _assemble(
    runs: pd.DataFrame, tags: pd.DataFrame, params: pd.DataFrame, metrics: pd.DataFrame
) -> pd.DataFrame:
    index = pd.Index(runs["run_id"], name="run_id")
    frame = runs.set_index("run_id")
    tag_wide = _pivot(tags, "", index)
    for key, column in RUN_TAGS.items():
        frame[column] = tag_wide[key] if key in tag_wide else None
    frame["status"] = [
        run_status(st, pr) for st, pr in zip(frame["status"], frame.pop("pruned"), strict=True)
    ]
    if RUN_NAME_TAG in tag_wide:
        frame["run_name"] = frame["run_name"].where(
            frame["run_name"].notna() & (frame["run_name"] != ""), tag_wide[RUN_NAME_TAG]
        )
    param_wide = _pivot(params, "params.", index)
    for column in param_wide.columns:  # parse each distinct string once
        values = param_wide[column]
        parsed = {v: parse_value(v) for v in values.dropna().unique()}
        param_wide[column] = values.map(parsed).astype(object).where(values.notna(), None)
    if not metrics.empty:
        metrics = metrics.assign(
            value=metrics["value"].where(~metrics["is_nan"].astype(bool), float("nan")).astype(float)
        )
    metric_wide = _pivot(
        metrics[["run_id", "key", "value"]] if not metrics.empty else metrics, "metrics.", index
    )
    out = pd.concat([frame, param_wide, metric_wide], axis=1).reset_index()
    order = ["run_id", "run_name", "status", "trial_id", "config_hash", "setting_hash", "start_time"]
    return out[order + [c for c in out.columns if c not in order]]


def _same(a: Any, b: Any) -> bool:
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    return a == b


def run_status(status: Any, pruned_tag: Any) -> Any:
    """A run's status for reports: PRUNED for a KILLED run the sweep's pruner stopped."""
    return "PRUNED" if status == "KILLED" and str(pruned_tag).lower() == "true" else status


def verify_sample(frame: pd.DataFrame, client: MlflowClient) -> None:
    """Compare one run of ``frame`` with ``client.get_run``; raise :class:`FastPathMismatchError`."""
    if frame.empty:
        return
    row = frame.iloc[0]
    run = client.get_run(row["run_id"])
    expected = {f"params.{k}": parse_value(v) for k, v in run.data.params.items()}
    expected |= {f"metrics.{k}": float(v) for k, v in run.data.metrics.items()}
    expected |= {
        "status": run_status(run.info.status, run.data.tags.get(PRUNED_TAG)),
        "trial_id": run.data.tags.get(tags.TRIAL_ID),
    }
    bad = [k for k, v in expected.items() if not _same(row.get(k), v)]
    extra = [
        c
        for c in frame.columns
        if c.startswith(("params.", "metrics.")) and c not in expected and not _missing(row[c])
    ]
    if bad or extra:
        raise FastPathMismatchError(
            f"SQL read of run {row['run_id']} differs from the API: {sorted(bad + extra)[:5]}"
        )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
