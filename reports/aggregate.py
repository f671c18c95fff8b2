"""Seeds aggregated per setting: mean, sample std and n of each metric over finished trials.

A *setting* is one combination of the swept values (the row keys, normally the sweep's axes).
Every trial counts in exactly one state: FINISHED (its metrics enter the statistics), PRUNED
(stopped early by the sweep's pruner: a KILLED run tagged ``mugs.pruned=true``), FAILED
(MLflow status FAILED or KILLED, or listed as failed in ``trials.csv`` without a run), RUNNING
(RUNNING or SCHEDULED) or MISSING (listed in ``trials.csv``, no run yet). Settings with no
finished trial are kept, labelled by their trials' states. The sweep's reference trials (runs
tagged ``mugs.reference``, trials.csv rows with a ``reference``) are not settings: they are left
to :mod:`reports.references`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from orchestration.reference import REFERENCE_COLUMN
from orchestration.trial import TrialState
from reports.fetch import SweepData
from reports.values import is_missing, parse_value

FINISHED, FAILED, RUNNING, MISSING, PRUNED = "FINISHED", "FAILED", "RUNNING", "MISSING", "PRUNED"
STATES = (FINISHED, PRUNED, FAILED, RUNNING, MISSING)
_STATUS_TO_STATE = {
    "FINISHED": FINISHED,
    "PRUNED": PRUNED,  # the fetchers' name for a KILLED run tagged mugs.pruned=true
    "FAILED": FAILED,
    "KILLED": FAILED,
    "RUNNING": RUNNING,
    "SCHEDULED": RUNNING,
}
_CSV_FAILED = {"FAILED", "KILLED", "ERROR", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}
_CSV_RUNNING = {"RUNNING", "SCHEDULED", "STARTING"}
_TRIAL_STATE_TO_REPORT = {
    TrialState.FAILED.value: FAILED,
    TrialState.PRUNED.value: PRUNED,
    TrialState.PENDING.value: RUNNING,
    TrialState.RUNNING.value: RUNNING,
    TrialState.EVALUATING.value: RUNNING,
    TrialState.STOPPED.value: MISSING,
    TrialState.NEW.value: MISSING,
    TrialState.DONE.value: MISSING,  # done, yet no run to read its results from
}

Setting = tuple[Any, ...]


@dataclass
class Aggregate:
    """Per-setting statistics (``table``) and the per-trial states they came from (``trials``).

    ``table`` columns: ``setting`` (tuple of values, one per key in ``keys``), one column per key
    (the value), ``n`` (finished trials), ``finished``/``failed``/``running``/``missing``,
    ``label`` (``OK`` or the state of a setting without finished trials), ``note``, ``run_ids``
    (finished first) and for each metric ``<metric>.mean``, ``<metric>.std`` (sample std,
    ddof=1; NaN below two values), ``<metric>.n`` and ``<metric>.best``.
    """

    keys: list[str]
    metrics: list[str]
    table: pd.DataFrame
    trials: pd.DataFrame
    unattributed: dict[str, int] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Trials per state over the whole sweep (unattributed missing trials included)."""
        counts = {s: int((self.trials["state"] == s).sum()) if not self.trials.empty else 0 for s in STATES}
        for state, extra in self.unattributed.items():
            counts[state] += extra
        return counts


def lower_is_better(metric: str) -> bool:
    """Loss- and error-like metrics are minimised; accuracies maximised."""
    name = metric.lower()
    return "loss" in name or "error" in name or name.endswith("_err")


def state_of_status(status: Any) -> str:
    """A run's (fetched) MLflow status as a trial state."""
    return _STATUS_TO_STATE.get(str(status).upper(), FAILED)


def state_of_csv(state: Any) -> str:
    """A trials.csv ``state`` (of a trial without a run) as a report state: the driver's
    :class:`~orchestration.trial.TrialState` values (``failed``, ``pruned``; ``pending``,
    ``running``, ``evaluating`` count as RUNNING; ``stopped``, and ``done`` without its run, as
    MISSING), and for older files the status words they held."""
    text = str(state or "").strip()
    by_trial_state = _TRIAL_STATE_TO_REPORT.get(text)  # lower case: TrialState; upper: older files
    if by_trial_state is not None:
        return by_trial_state
    text = text.upper()
    if text == PRUNED:
        return PRUNED
    if text in _CSV_FAILED:
        return FAILED
    if text in _CSV_RUNNING:
        return RUNNING
    return MISSING


def is_reference(frame: pd.DataFrame) -> pd.Series:
    """Which rows of a runs frame or of trials.csv are reference trials (non-empty ``reference``)."""
    if REFERENCE_COLUMN not in frame:
        return pd.Series(False, index=frame.index)
    return frame[REFERENCE_COLUMN].map(lambda v: not is_missing(v) and str(v) != "")


def trial_states(
    data: SweepData, keys: Sequence[str], metrics: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per trial (runs plus trials.csv entries without a run): ``setting``, ``state``, metrics.

    Reference trials are left out. Returns the frame and the count, per state, of listed trials
    that could not be put in a setting (trials.csv without the axis columns).
    """
    runs = data.runs[~is_reference(data.runs)].reset_index(drop=True)
    n = len(runs)
    columns = [runs[f"params.{k}"] if f"params.{k}" in runs else pd.Series([None] * n) for k in keys]
    settings = (
        [tuple(None if is_missing(v) else v for v in values) for values in zip(*columns, strict=True)]
        if keys
        else [()] * n
    )
    frame = pd.DataFrame(
        {
            "run_id": runs["run_id"].to_numpy() if n else [],
            "trial_id": runs["trial_id"].to_numpy() if n else [],
            "setting": pd.Series(settings, dtype=object),
            "state": [state_of_status(s) for s in runs["status"]] if n else [],
            "start_time": runs["start_time"].to_numpy() if n else [],
        }
    )
    for m in metrics:
        column = f"metrics.{m}"
        frame[m] = pd.to_numeric(runs[column], errors="coerce").to_numpy() if column in runs else float("nan")
    rows: list[dict[str, Any]] = []
    unattributed: dict[str, int] = {}
    trials = data.trials
    if trials is not None and not trials.empty:
        seen_ids = set(runs["trial_id"].dropna()) if "trial_id" in runs else set()
        seen_hashes = set(runs["config_hash"].dropna()) if "config_hash" in runs else set()
        have_axes = all(k in trials.columns for k in keys)
        listed = trials[~is_reference(trials)].to_dict("records")
        for item in listed:
            trial_id = item.get("trial_id") or None
            config_hash = item.get("config_hash") or None
            if (trial_id and trial_id in seen_ids) or (config_hash and config_hash in seen_hashes):
                continue
            state = state_of_csv(item.get("state"))
            if not have_axes:
                unattributed[state] = unattributed.get(state, 0) + 1
                continue
            setting = tuple(parse_value(item[k]) if item[k] != "" else None for k in keys)
            rows.append(
                {"run_id": None, "trial_id": trial_id, "setting": setting, "state": state, "start_time": None}
                | {m: float("nan") for m in metrics}
            )
    if rows:
        extra = pd.DataFrame(rows, columns=list(frame.columns))
        frame = pd.concat([frame, extra], ignore_index=True) if n else extra
    return frame, unattributed


def _sort_key(setting: Setting) -> tuple:
    def one(v: Any) -> tuple:
        if v is None:
            return (3, "")
        if isinstance(v, bool):
            return (0, float(v), "")
        if isinstance(v, (int, float)):
            return (0, float(v), "")
        if isinstance(v, tuple):
            return (1, tuple(one(x) for x in v))
        return (2, str(v))

    return tuple(one(v) for v in setting)


def _setting_order(data: SweepData, keys: Sequence[str], settings: Sequence[Setting]) -> list[Setting]:
    """trials.csv order where the sweep listed its trials, else sorted by value; rest appended."""
    order: list[Setting] = []
    trials = data.trials
    if trials is not None and not trials.empty and all(k in trials.columns for k in keys):
        known = set(settings)
        seen: set[Setting] = set()
        for item in trials[~is_reference(trials)][list(keys)].itertuples(index=False, name=None):
            s = tuple(parse_value(v) if v != "" else None for v in item)
            if s not in seen and s in known:
                seen.add(s)
                order.append(s)
    placed = set(order)
    rest = sorted((s for s in set(settings) if s not in placed), key=_sort_key)
    return order + rest


def state_note(counts: dict[str, int]) -> str:
    """``1 PRUNED, 2 FAILED``: the trials of a row that did not finish."""
    return ", ".join(f"{counts[name]} {name}" for name in (PRUNED, FAILED, RUNNING, MISSING) if counts[name])


def state_label(counts: dict[str, int]) -> str:
    """``OK`` for a row with finished trials, else the state of its trials (RUNNING first)."""
    if counts[FINISHED]:
        return "OK"
    for state in (RUNNING, FAILED, PRUNED):
        if counts[state]:
            return state
    return MISSING


def mark_best(table: pd.DataFrame, metrics: Sequence[str]) -> None:
    """Set ``<metric>.best`` on the rows whose mean is the column's best (ties all marked)."""
    for m in metrics:
        means = table[f"{m}.mean"]
        valid = means.dropna()
        if valid.empty:
            table[f"{m}.best"] = False
            continue
        target = valid.min() if lower_is_better(m) else valid.max()
        table[f"{m}.best"] = means.apply(
            lambda v, t=target: not is_missing(v) and math.isclose(v, t, abs_tol=1e-9)
        )


def aggregate(data: SweepData, keys: Sequence[str], metrics: Sequence[str]) -> Aggregate:
    """Aggregate the sweep's trials per setting of ``keys`` over seeds (see :class:`Aggregate`)."""
    keys, metrics = list(keys), list(metrics)
    trials, unattributed = trial_states(data, keys, metrics)
    order = _setting_order(data, keys, list(trials["setting"])) if not trials.empty else []
    records: list[dict[str, Any]] = []
    positions: dict[Setting, list[int]] = {}
    for i, setting in enumerate(trials["setting"]):
        positions.setdefault(setting, []).append(i)
    for setting in order:
        group = trials.iloc[positions[setting]]
        states = group["state"]
        finished = group[states == FINISHED]
        counts = {s: int((states == s).sum()) for s in STATES}
        record: dict[str, Any] = {"setting": setting}
        record.update({k: v for k, v in zip(keys, setting, strict=True)})
        record["n"] = counts[FINISHED]
        record.update({s.lower(): counts[s] for s in STATES})
        record["label"] = state_label(counts)
        record["note"] = state_note(counts)
        ordered = pd.concat([finished, group[states != FINISHED]])
        record["run_ids"] = [r for r in ordered["run_id"] if isinstance(r, str)]
        for m in metrics:
            values = finished[m].dropna()
            record[f"{m}.mean"] = float(values.mean()) if len(values) else float("nan")
            record[f"{m}.std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            record[f"{m}.n"] = int(len(values))
        records.append(record)
    table = pd.DataFrame.from_records(records)
    if table.empty:
        table = pd.DataFrame(
            columns=["setting", *keys, "n", *(s.lower() for s in STATES), "label", "note", "run_ids"]
        )
        for m in metrics:
            for suffix in ("mean", "std", "n"):
                table[f"{m}.{suffix}"] = []
    mark_best(table, metrics)
    return Aggregate(keys=keys, metrics=metrics, table=table, trials=trials, unattributed=unattributed)
