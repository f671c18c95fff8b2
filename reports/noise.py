"""Which differences between settings exceed the seed noise: Welch's t-test against one row.

The comparison row is the full-Mugs setting (loss weights [1, 1, 1]; the best such row when the
sweep has several, e.g. crossed with another axis) when the sweep has one, else the best row of
the primary metric. Every other row's seeds are tested against its seeds with Welch's t-test
(two-sided, unequal variances: ``scipy.stats.ttest_ind(equal_var=False)``) at 95%: p < 0.05 is
*significant*, anything else *within noise*; a row with fewer than two finished seeds (or a
comparison row with one) is *untestable*: with one seed no claim about a difference can be made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from reports.aggregate import FINISHED, Aggregate, lower_is_better
from reports.values import is_missing

ALPHA = 0.05
TEST_NAME = "Welch's t-test (two-sided, unequal variances; scipy.stats.ttest_ind(equal_var=False))"
SIGNIFICANT, WITHIN_NOISE, UNTESTABLE, COMPARISON = "significant", "within noise", "untestable", "comparison"
FULL_MUGS = (1.0, 1.0, 1.0)
LOSS_WEIGHTS = "method.loss_weights"


@dataclass(frozen=True)
class Welch:
    """Welch's t statistic, its Welch-Satterthwaite degrees of freedom and the two-sided p-value."""

    t: float
    df: float
    p: float


@dataclass(frozen=True)
class NoiseMark:
    """Row ``row`` against the comparison row: difference of means, the test (None: untestable)."""

    row: int
    delta: float | None
    test: Welch | None
    verdict: str  # SIGNIFICANT, WITHIN_NOISE, UNTESTABLE or COMPARISON


@dataclass(frozen=True)
class NoiseReport:
    """The comparison row (None without finished rows), why it was chosen, and one mark per row."""

    metric: str
    comparison: int | None
    full_mugs: bool
    marks: dict[int, NoiseMark]

    @property
    def untestable(self) -> int:
        """Rows that could not be tested (fewer than two finished seeds on one side)."""
        return sum(m.verdict == UNTESTABLE for m in self.marks.values())


def welch(a: Sequence[float], b: Sequence[float]) -> Welch | None:
    """Welch's t-test of mean(a) - mean(b); None when either side has fewer than two values.

    Two sets of identical values (zero variance on both sides) give p = 1 for equal means and
    p = 0 otherwise (no noise at all: any difference is exact).
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or len(y) < 2:
        return None
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    diff = float(x.mean() - y.mean())
    if vx + vy == 0:
        t = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        return Welch(t, float(len(x) + len(y) - 2), 1.0 if diff == 0 else 0.0)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    result = stats.ttest_ind(x, y, equal_var=False)
    return Welch(float(result.statistic), float(df), float(result.pvalue))


def seed_values(agg: Aggregate, row: int, metric: str) -> list[float]:
    """The finished seeds' values of ``metric`` in row ``row`` of the aggregate table."""
    setting = agg.table.iloc[row]["setting"]
    trials = agg.trials
    if trials.empty or metric not in trials:
        return []
    chosen = trials[(trials["state"] == FINISHED) & trials["setting"].map(lambda s: s == setting)]
    return [float(v) for v in pd.to_numeric(chosen[metric], errors="coerce").dropna()]


def _is_full_mugs(agg: Aggregate, row: int) -> bool:
    if LOSS_WEIGHTS not in agg.keys:
        return False
    value = agg.table.iloc[row][LOSS_WEIGHTS]
    try:
        return isinstance(value, tuple) and tuple(float(w) for w in value) == FULL_MUGS
    except (TypeError, ValueError):
        return False


def comparison_row(agg: Aggregate, metric: str) -> tuple[int | None, bool]:
    """The row to compare with (see the module docstring) and whether it is the full-Mugs row."""
    means = agg.table[f"{metric}.mean"] if f"{metric}.mean" in agg.table else pd.Series(dtype=float)
    valid = [i for i, v in enumerate(means) if not is_missing(v)]
    full = [i for i in valid if _is_full_mugs(agg, i)]
    candidates = full or valid
    if not candidates:
        return None, False
    pick = min if lower_is_better(metric) else max
    return pick(candidates, key=lambda i: float(means.iloc[i])), bool(full)


def noise_marks(agg: Aggregate, metric: str) -> NoiseReport:
    """Each row with a mean of ``metric`` against the comparison row (see the module docstring)."""
    ref, full = comparison_row(agg, metric)
    marks: dict[int, NoiseMark] = {}
    if ref is None:
        return NoiseReport(metric, None, False, marks)
    base = seed_values(agg, ref, metric)
    base_mean = float(agg.table.iloc[ref][f"{metric}.mean"])
    for i in range(len(agg.table)):
        mean = agg.table.iloc[i][f"{metric}.mean"]
        if is_missing(mean):
            continue
        if i == ref:
            marks[i] = NoiseMark(i, 0.0, None, COMPARISON)
            continue
        test = welch(seed_values(agg, i, metric), base)
        if test is None:
            verdict = UNTESTABLE
        else:
            verdict = SIGNIFICANT if test.p < ALPHA else WITHIN_NOISE
        marks[i] = NoiseMark(i, float(mean) - base_mean, test, verdict)
    return NoiseReport(metric, ref, full, marks)


def mark_text(mark: NoiseMark | None) -> str:
    """A noise cell: ``-3.10, p=0.002: significant``, ``+0.40, p=0.41: within noise``, ..."""
    if mark is None or mark.delta is None:
        return "\u2014"
    if mark.verdict == COMPARISON:
        return "comparison row"
    if mark.test is None:
        return f"{mark.delta:+.2f}: untestable (n=1)"
    return f"{mark.delta:+.2f}, {format_p(mark.test.p)}: {mark.verdict}"


def format_p(p: float) -> str:
    """A p-value for a cell: ``p=0.0123`` (3 significant digits), ``p<0.001`` below that."""
    return "p<0.001" if p < 0.001 else f"p={p:.3g}"
