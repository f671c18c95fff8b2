"""The report's figures as PNG bytes (matplotlib's object API, no pyplot global state).

* metric vs each numeric swept key (queue sizes, top-k, ...) with std-over-seeds error bars;
* a heat map over the loss-weight simplex when non-binary weights were swept;
* a bar chart per setting when no numeric key was swept (e.g. loss on/off ablations);
* training curves (``train/loss`` history, mean over the plotted seeds of each setting);
* the collapse diagnostics of the same runs (``train/diag/<branch>/<kind>``, :mod:`mugs.diagnostics`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mugs.diagnostics import DIAG_BRANCHES, MAX_TARGET_COS, branch_kinds, diag_key
from reports.aggregate import Aggregate, lower_is_better
from reports.table import LOSS_NAMES, LOSS_WEIGHTS, binary_weights, key_header, metric_header
from reports.values import format_number, is_missing

MAX_SERIES = 10  # the loss-weight ablation has 10 settings: all of them on one plot
MAX_BARS = 40
DPI = 100


@dataclass(frozen=True)
class Plot:
    """One figure: a file-safe ``name``, a title, its PNG bytes and a caption."""

    name: str
    title: str
    png: bytes
    caption: str = ""


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not is_missing(v)


def _numeric_keys(agg: Aggregate) -> list[str]:
    keys = []
    for key in agg.keys:
        values = [v for v in agg.table[key] if not is_missing(v)] if key in agg.table else []
        if values and all(_is_number(v) for v in values) and len(set(values)) >= 2:
            keys.append(key)
    return keys


def _dependent(table: pd.DataFrame, key: str, other: str) -> bool:
    """True when ``other`` is a function of ``key`` over the sweep (e.g. paired queue sizes)."""
    mapping: dict[Any, Any] = {}
    for a, b in zip(table[key], table[other], strict=True):
        if a in mapping and mapping[a] != b:
            return False
        mapping[a] = b
    return True


def weights_label(value: Any) -> str:
    """A short label of a loss-weight vector: names of the losses on, or the weights."""
    if isinstance(value, tuple) and len(value) == 3 and binary_weights([value]):
        on = [n for n, w in zip(LOSS_NAMES, value, strict=True) if float(w) > 0]
        return "+".join(on) if on else "none"
    return "/".join(format_number(v) for v in value) if isinstance(value, tuple) else format_number(value)


def setting_label(agg: Aggregate, setting: tuple, skip: Sequence[str] = ()) -> str:
    """Compact label of a setting for legends and axes."""
    parts = []
    for key, value in zip(agg.keys, setting, strict=True):
        if key in skip:
            continue
        if key == LOSS_WEIGHTS:
            parts.append(weights_label(value))
        else:
            parts.append(f"{key_header(key)}={format_number(value)}")
    return ", ".join(parts) if parts else "all"


def plot_metric_vs_key(agg: Aggregate, key: str) -> Plot | None:
    """Each metric's mean ± std against the numeric key ``key``, one line per other setting."""
    table = agg.table[agg.table["n"] > 0]
    if table.empty:
        return None
    others = [k for k in agg.keys if k != key and not _dependent(agg.table, key, k)]
    paired = [k for k in agg.keys if k != key and k not in others]
    series: dict[tuple, list[pd.Series]] = {}
    for _, row in table.iterrows():
        label = tuple(row[k] for k in others)
        series.setdefault(label, []).append(row)
    primary = agg.metrics[0]
    ranked = sorted(
        series.items(),
        key=lambda item: (
            -max(
                (r[f"{primary}.mean"] for r in item[1] if not is_missing(r[f"{primary}.mean"])),
                default=-math.inf,
            )
        ),
    )
    shown = ranked[:MAX_SERIES]
    fig = Figure(figsize=(5.2 * len(agg.metrics), 3.8))
    axes = fig.subplots(1, len(agg.metrics), squeeze=False)[0]
    values = [v for v in table[key] if _is_number(v)]
    log_x = min(values) > 0 and max(values) / min(values) >= 8
    for ax, metric in zip(axes, agg.metrics, strict=True):
        for label, rows in shown:
            frame = pd.DataFrame(rows).sort_values(key)
            ax.errorbar(
                frame[key].astype(float),
                frame[f"{metric}.mean"].astype(float),
                yerr=frame[f"{metric}.std"].astype(float).fillna(0.0),
                marker="o",
                capsize=3,
                label=setting_label_from(agg, others, label),
            )
        if log_x:
            ax.set_xscale("log", base=2)
        xlabel = key_header(key) + "".join(f" (= {key_header(p)})" for p in paired)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric_header(metric))
        ax.grid(True, alpha=0.3)
        if others:
            ax.legend(fontsize=7)
    fig.suptitle(f"{', '.join(metric_header(m) for m in agg.metrics)} vs {key_header(key)}")
    caption = "error bars: sample std over finished seeds"
    if len(ranked) > MAX_SERIES:
        caption += f"; {MAX_SERIES} of {len(ranked)} series shown (best by {metric_header(primary)})"
    return Plot(f"metric_vs_{key.replace('.', '_')}", f"Metrics vs {key_header(key)}", _png(fig), caption)


def setting_label_from(agg: Aggregate, keys: Sequence[str], values: tuple) -> str:
    """Legend label for the values of ``keys``."""
    parts = []
    for key, value in zip(keys, values, strict=True):
        parts.append(
            weights_label(value) if key == LOSS_WEIGHTS else f"{key_header(key)}={format_number(value)}"
        )
    return ", ".join(parts) if parts else "mean"


def plot_weight_simplex(agg: Aggregate) -> Plot | None:
    """Heat map of each metric over the loss-weight simplex (weights normalised to sum 1)."""
    if LOSS_WEIGHTS not in agg.keys or binary_weights(list(agg.table[LOSS_WEIGHTS])):
        return None
    table = agg.table[agg.table["n"] > 0]
    points: dict[tuple, dict[str, float]] = {}
    for _, row in table.iterrows():
        w = row[LOSS_WEIGHTS]
        if not isinstance(w, tuple) or len(w) != 3 or sum(float(x) for x in w) <= 0:
            continue
        total = sum(float(x) for x in w)
        bary = tuple(round(float(x) / total, 6) for x in w)
        best = points.setdefault(bary, {})
        for m in agg.metrics:
            v = row[f"{m}.mean"]
            if not is_missing(v):
                better = min if lower_is_better(m) else max
                best[m] = better(best.get(m, v), v)
    if len(points) < 2:
        return None
    from matplotlib.tri import Triangulation

    h = math.sqrt(3) / 2
    xy = {b: (b[1] + 0.5 * b[2], h * b[2]) for b in points}
    fig = Figure(figsize=(4.8 * len(agg.metrics), 4.4))
    axes = fig.subplots(1, len(agg.metrics), squeeze=False)[0]
    for ax, metric in zip(axes, agg.metrics, strict=True):
        have = [b for b in points if metric in points[b]]
        if not have:
            ax.set_axis_off()
            continue
        xs = [xy[b][0] for b in have]
        ys = [xy[b][1] for b in have]
        zs = [points[b][metric] for b in have]
        ax.plot([0, 1, 0.5, 0], [0, 0, h, 0], color="black", linewidth=1)
        if len(have) >= 3:
            try:
                ax.tricontourf(Triangulation(xs, ys), zs, levels=12, cmap="viridis", alpha=0.6)
            except (ValueError, RuntimeError):  # collinear points: no triangulation
                pass
        sc = ax.scatter(xs, ys, c=zs, cmap="viridis", edgecolors="black", s=60, zorder=3)
        for x, y, z in zip(xs, ys, zs, strict=True):
            ax.annotate(
                f"{z:.1f}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7
            )
        for (x, y), name in zip(((0, 0), (1, 0), (0.5, h)), LOSS_NAMES, strict=True):
            ax.text(x, y - 0.11 if y == 0 else y + 0.1, name, ha="center", fontsize=9, weight="bold")
        fig.colorbar(sc, ax=ax, shrink=0.8)
        ax.set_title(metric_header(metric), pad=14)
        ax.set_xlim(-0.12, 1.12)
        ax.set_ylim(-0.16, h + 0.18)
        ax.set_aspect("equal")
        ax.set_axis_off()
    caption = "weights normalised to sum 1; each corner is one loss alone"
    if len(agg.keys) > 1:
        caption += "; best value over the other swept keys"
    return Plot("weight_simplex", "Loss-weight simplex", _png(fig), caption)


def plot_by_setting(agg: Aggregate) -> Plot | None:
    """Bar chart of each metric per setting with error bars (categorical sweeps)."""
    table = agg.table[agg.table["n"] > 0]
    if table.empty:
        return None
    table = table.head(MAX_BARS)
    labels = [setting_label(agg, s) for s in table["setting"]]
    fig = Figure(figsize=(max(5.0, 0.45 * len(labels) + 2) * len(agg.metrics), 4.2))
    axes = fig.subplots(1, len(agg.metrics), squeeze=False)[0]
    for ax, metric in zip(axes, agg.metrics, strict=True):
        means = table[f"{metric}.mean"].astype(float)
        stds = table[f"{metric}.std"].astype(float).fillna(0.0)
        colors = ["tab:orange" if b else "tab:blue" for b in table[f"{metric}.best"]]
        ax.bar(range(len(labels)), means.fillna(0.0), yerr=stds, capsize=3, color=colors)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        finite = means.dropna()
        if not finite.empty:
            low, high = float(finite.min()), float(finite.max())
            pad = max(1.0, (high - low) * 0.3)
            ax.set_ylim(low - pad - float(stds.max()), high + pad + float(stds.max()))
        ax.set_ylabel(metric_header(metric))
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Metrics per setting")
    caption = "error bars: sample std over finished seeds; orange: best"
    if (agg.table["n"] > 0).sum() > MAX_BARS:
        caption += f"; first {MAX_BARS} settings shown"
    return Plot("metric_by_setting", "Metrics per setting", _png(fig), caption)


def plot_training_curves(
    curves: Mapping[str, Sequence[pd.DataFrame]], metric: str = "train/loss"
) -> Plot | None:
    """One line per setting: mean of ``metric`` over its plotted runs at each step."""
    curves = {label: frames for label, frames in curves.items() if frames}
    if not curves:
        return None
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    for label, frames in curves.items():
        merged = pd.concat(frames).groupby("step", sort=True)["value"].mean()
        ax.plot(merged.index, merged.values, label=f"{label} (n={len(frames)})", linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(f"Training curves ({metric})")
    return Plot(
        "training_curves",
        "Training curves",
        _png(fig),
        f"{metric}: mean over the plotted seeds of each setting",
    )


def _mean_curve(frames: Sequence[pd.DataFrame]) -> pd.Series:
    return pd.concat(frames).groupby("step", sort=True)["value"].mean()


def plot_diagnostics(curves: Mapping[str, Mapping[str, Sequence[pd.DataFrame]]]) -> Plot | None:
    """Collapse diagnostics: a panel per ``diag/<branch>/<kind>`` key (rows: branch), a line per setting.

    ``curves`` maps the trainer's key to {setting label: histories}; each line is the mean over
    the setting's plotted runs, as in the training curves. Dashed: the verdict's cosine limit.
    """
    present = {k: {lab: f for lab, f in by.items() if f} for k, by in curves.items()}
    present = {k: by for k, by in present.items() if by}
    rows = [b for b in DIAG_BRANCHES if any(diag_key(b, k) in present for k in branch_kinds(b))]
    if not rows:
        return None
    ncols = max(len(branch_kinds(b)) for b in rows)
    labels = list(dict.fromkeys(lab for by in present.values() for lab in by))
    colors = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    fig = Figure(figsize=(3.3 * ncols, 2.5 * len(rows) + 0.6))
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, branch in enumerate(rows):
        kinds = branch_kinds(branch)
        for c, ax in enumerate(axes[r]):
            by_label = present.get(diag_key(branch, kinds[c])) if c < len(kinds) else None
            if not by_label:
                ax.set_axis_off()
                continue
            for label, frames in by_label.items():
                mean = _mean_curve(frames)
                ax.plot(mean.index, mean.values, color=colors[label], linewidth=1.1)
            if kinds[c] == "target_cos":
                ax.axhline(MAX_TARGET_COS, color="grey", linestyle="--", linewidth=0.8)
            ax.set_title(f"{branch}: {kinds[c]}", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("step", fontsize=8)
    handles = [Line2D([], [], color=colors[lab], label=lab) for lab in labels]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(labels)), fontsize=7)
    fig.suptitle("Collapse diagnostics (teacher targets)")
    fig.subplots_adjust(bottom=0.1 + 0.03 * math.ceil(len(labels) / 4), hspace=0.45)
    caption = (
        f"mean over the plotted seeds of each setting; dashed: cosine {MAX_TARGET_COS} (collapse); "
        "healthy: std ~1/sqrt(d), cosine well below 1, logit gap > 0, batch entropy > sample entropy"
    )
    return Plot("collapse_diagnostics", "Collapse diagnostics", _png(fig), caption)


def make_plots(
    agg: Aggregate,
    curves: Mapping[str, Sequence[pd.DataFrame]] | None = None,
    diagnostics: Mapping[str, Mapping[str, Sequence[pd.DataFrame]]] | None = None,
) -> list[Plot]:
    """All figures that apply to this sweep (``diagnostics``: see :func:`plot_diagnostics`)."""
    plots: list[Plot] = []
    if agg.metrics:
        numeric = _numeric_keys(agg)
        seen_pairs: set[str] = set()
        for key in numeric:
            if key in seen_pairs:
                continue
            seen_pairs.update(
                k
                for k in numeric
                if k != key and _dependent(agg.table, key, k) and _dependent(agg.table, k, key)
            )
            plot = plot_metric_vs_key(agg, key)
            if plot:
                plots.append(plot)
        simplex = plot_weight_simplex(agg)
        if simplex:
            plots.append(simplex)
        if not plots:
            bars = plot_by_setting(agg)
            if bars:
                plots.append(bars)
    if curves:
        curve_plot = plot_training_curves(curves)
        if curve_plot:
            plots.append(curve_plot)
    if diagnostics:
        diag_plot = plot_diagnostics(diagnostics)
        if diag_plot:
            plots.append(diag_plot)
    return plots
