"""The report's reference rows: the untrained network and raw pixels, from the reference trials.

A sweep runs one reference trial per seed (:mod:`orchestration.reference`): the base config at
0 training steps, evaluated with the sweep's protocols (the untrained network: ``eval/<name>``)
and, on small image datasets, with the raw-pixel kNN (``eval/pixels/<name>``). Each kind
becomes one row with mean ± std over the finished reference trials, in the same metric columns
as the settings; a metric a kind was not measured with (linear on pixels) is "not measured".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from mugs.eval import PIXEL_DATASETS
from orchestration.reference import PIXELS, REFERENCE_COLUMN, REFERENCE_LABELS, UNTRAINED, pixel_metric
from reports.aggregate import (
    FINISHED,
    STATES,
    is_reference,
    state_label,
    state_note,
    state_of_csv,
    state_of_status,
)
from reports.fetch import SweepData
from reports.values import is_missing

NOT_MEASURED = "not measured"


@dataclass
class ReferenceRow:
    """One reference row: ``values`` maps metric -> finished trials' values (None: not measured)."""

    kind: str
    label: str
    values: dict[str, list[float] | None]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Finished reference trials."""
        return self.counts.get(FINISHED, 0)

    @property
    def state(self) -> str:
        """``OK`` with finished trials, else their state (RUNNING, FAILED, MISSING)."""
        return state_label(self.counts)

    @property
    def note(self) -> str:
        return state_note(self.counts)

    def mean(self, metric: str) -> float | None:
        values = self.values.get(metric)
        return statistics.fmean(values) if values else None

    def std(self, metric: str) -> float | None:
        values = self.values.get(metric)
        return statistics.stdev(values) if values and len(values) > 1 else None


def _counts(runs: pd.DataFrame, listed: pd.DataFrame | None) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for status in runs["status"]:
        counts[state_of_status(status)] += 1
    if listed is not None:
        seen = set(runs["trial_id"].dropna())
        for item in listed.to_dict("records"):
            if item.get("trial_id") not in seen:
                counts[state_of_csv(item.get("state"))] += 1
    return counts


def _values(finished: pd.DataFrame, column: str) -> list[float] | None:
    if column not in finished:
        return None
    values = [float(v) for v in pd.to_numeric(finished[column], errors="coerce") if not math.isnan(v)]
    return values or None


def _dataset_of(runs: pd.DataFrame) -> str | None:
    column = "params.data.dataset"
    if column not in runs or runs.empty:
        return None
    values = [v for v in runs[column] if not is_missing(v)]
    return str(values[0]) if values else None


def reference_rows(data: SweepData, metrics: Sequence[str]) -> list[ReferenceRow]:
    """The untrained-network row and, on small image datasets, the raw-pixel row ([] without references)."""
    runs = data.runs[is_reference(data.runs)]
    runs = runs[runs[REFERENCE_COLUMN] == UNTRAINED] if not runs.empty else runs
    listed = data.trials[is_reference(data.trials)] if data.trials is not None else None
    if listed is not None and not listed.empty:
        listed = listed[listed[REFERENCE_COLUMN] == UNTRAINED]
    if runs.empty and (listed is None or listed.empty):
        return []
    counts = _counts(runs, listed)
    finished = runs[[state_of_status(s) == FINISHED for s in runs["status"]]]
    rows = [
        ReferenceRow(
            UNTRAINED,
            REFERENCE_LABELS[UNTRAINED],
            {m: _values(finished, f"metrics.{m}") for m in metrics},
            counts,
        )
    ]
    has_pixels = any(c.startswith(f"metrics.{pixel_metric('eval/')}") for c in runs.columns)
    if has_pixels or _dataset_of(runs) in PIXEL_DATASETS:
        values = {m: _values(finished, f"metrics.{pixel_metric(m)}") for m in metrics}
        rows.append(ReferenceRow(PIXELS, REFERENCE_LABELS[PIXELS], values, counts))
    return rows


def untrained(rows: Sequence[ReferenceRow]) -> ReferenceRow | None:
    """The untrained-network row, if the sweep has one."""
    return next((r for r in rows if r.kind == UNTRAINED), None)


def gain(mean: float | None, reference: ReferenceRow | None, metric: str) -> float | None:
    """``mean`` minus the reference row's mean of ``metric`` (None when either is missing)."""
    base = reference.mean(metric) if reference is not None else None
    if mean is None or is_missing(mean) or base is None:
        return None
    return float(mean) - base
