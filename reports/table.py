"""The report's tables as format-neutral models, in the paper's layout.

Rows are the swept settings: loss weights as check marks for IDS / LGDS / GDS when every swept
weight is 0 or 1 (else the weights themselves), queue sizes, top-k, any other key by name.
Columns are the metrics (k-NN top-1, linear top-1, any requested one) as mean ± std over
finished seeds, the best of each column marked, then n, the primary metric's gain over the
untrained network, its Welch-test mark against the comparison row (:mod:`reports.noise`) and the
trial states. A setting without finished trials shows PRUNED / FAILED / MISSING / RUNNING in its
metric cells. The reference rows (:mod:`reports.references`) form a labelled block on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reports.aggregate import Aggregate, lower_is_better
from reports.compare import Comparison
from reports.noise import (
    ALPHA,
    LOSS_WEIGHTS,
    SIGNIFICANT,
    TEST_NAME,
    UNTESTABLE,
    WITHIN_NOISE,
    NoiseMark,
    NoiseReport,
    mark_text,
)
from reports.published import NO_SOURCE, Published, PublishedEntry, Source
from reports.references import NOT_MEASURED, PIXELS, ReferenceRow, gain, untrained
from reports.values import format_number, is_missing

LOSS_NAMES = ("IDS", "LGDS", "GDS")
CHECK, CROSS = "\u2713", "\u2717"
KEY_HEADERS = {
    "method.instance_queue_size": "instance queue",
    "method.local_group_queue_size": "local-group queue",
    "method.memory_size": "memory bank",
    "method.topk": "top-k",
    "method.name": "method",
    "method.n_groups": "groups",
    "model.arch": "arch",
    "train.epochs": "epochs",
    "seed": "seed",
}
METRIC_HEADERS = {
    "eval/knn_top1": "k-NN top-1",
    "eval/linear_top1": "linear top-1",
    "eval/knn_top5": "k-NN top-5",
    "eval/linear_top5": "linear top-5",
    "train/loss": "train loss",
}
DECIMALS = 2
NOISE_STATES = {SIGNIFICANT: "SIGNIFICANT", WITHIN_NOISE: "NOISE", UNTESTABLE: "UNTESTABLE"}


@dataclass(frozen=True)
class Column:
    """A table column: ``kind`` is ``setting``, ``metric``, ``count`` or ``status``."""

    key: str
    header: str
    kind: str
    metric: str | None = None


@dataclass(frozen=True)
class Cell:
    """One cell. ``text`` is the plain rendering; renderers may use ``mean``/``std``/``best``/``mark``.

    ``mark`` is ``check`` or ``cross`` for loss on/off cells; ``state`` is PRUNED, FAILED, MISSING or
    RUNNING for a metric cell without finished seeds.
    """

    text: str
    mean: float | None = None
    std: float | None = None
    best: bool = False
    mark: str | None = None
    state: str | None = None


@dataclass
class Table:
    """A titled grid of cells plus notes printed under it."""

    title: str
    columns: list[Column]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)
    reference_rows: int = 0  # the first rows are references (a block of their own)


def metric_header(metric: str) -> str:
    """Column header of a metric (``eval/knn_top1_k20`` -> ``k-NN top-1 (k=20)``)."""
    if metric in METRIC_HEADERS:
        return METRIC_HEADERS[metric]
    base, _, k = metric.rpartition("_k")
    if base in METRIC_HEADERS and k.isdigit():
        return f"{METRIC_HEADERS[base]} (k={k})"
    return metric


def key_header(key: str) -> str:
    """Column header of a swept key."""
    return KEY_HEADERS.get(key, key)


def format_stat(mean: float | None, std: float | None, decimals: int = DECIMALS) -> tuple[str, str]:
    """(mean, std) as text; std is empty below two seeds."""
    if mean is None or is_missing(mean):
        return "", ""
    std_text = "" if std is None or is_missing(std) else f"{std:.{decimals}f}"
    return f"{mean:.{decimals}f}", std_text


def stat_text(mean: float | None, std: float | None) -> str:
    """``mean ± std`` (or just the mean) as plain text."""
    m, s = format_stat(mean, std)
    return f"{m} \u00b1 {s}" if s else m


def binary_weights(values: Sequence[Any]) -> bool:
    """True when every loss-weight vector has three entries, each 0 or 1."""
    seen = [v for v in values if not is_missing(v)]
    if not seen:
        return False
    for v in seen:
        if not isinstance(v, tuple) or len(v) != 3:
            return False
        try:
            if any(float(w) not in (0.0, 1.0) for w in v):
                return False
        except (TypeError, ValueError):
            return False
    return True


def _weights_text(value: Any) -> str:
    if isinstance(value, tuple):
        return " / ".join(format_number(v) for v in value)
    return "\u2014" if is_missing(value) else format_number(value)


def _setting_columns(agg: Aggregate) -> tuple[list[Column], list[Any]]:
    """Columns for the row keys and, per key, how to make its cells."""
    columns: list[Column] = []
    makers: list[Any] = []
    for key in agg.keys:
        values = list(agg.table[key]) if key in agg.table else []
        if key == LOSS_WEIGHTS and binary_weights(values):
            for j, name in enumerate(LOSS_NAMES):
                columns.append(Column(f"{key}[{j}]", name, "setting"))

                def make(v: Any, j: int = j) -> Cell:
                    if not isinstance(v, tuple):
                        return Cell("\u2014")
                    on = float(v[j]) > 0
                    return Cell(CHECK if on else CROSS, mark="check" if on else "cross")

                makers.append((key, make))
        elif key == LOSS_WEIGHTS:
            columns.append(Column(key, "weights (IDS / LGDS / GDS)", "setting"))
            makers.append((key, lambda v: Cell(_weights_text(v))))
        else:
            columns.append(Column(key, key_header(key), "setting"))
            makers.append((key, lambda v: Cell("\u2014" if is_missing(v) else format_number(v))))
    return columns, makers


def _metric_cell(record: Any, metric: str) -> Cell:
    label = record["label"]
    if label != "OK":
        return Cell(label, state=label)
    mean, std = record[f"{metric}.mean"], record[f"{metric}.std"]
    if is_missing(mean):
        return Cell("n/a")
    return Cell(
        stat_text(mean, std),
        mean=float(mean),
        std=None if is_missing(std) else float(std),
        best=bool(record[f"{metric}.best"]),
    )


def _gain_cell(value: float | None) -> Cell:
    return Cell("\u2014") if value is None else Cell(f"{value:+.{DECIMALS}f}", mean=value)


def _noise_cell(mark: NoiseMark | None) -> Cell:
    state = None if mark is None else NOISE_STATES.get(mark.verdict)
    return Cell(mark_text(mark), state=state)


def _extra_columns(agg: Aggregate, base: ReferenceRow | None, noise: NoiseReport | None) -> list[Column]:
    """The primary metric's "Δ vs untrained" and Welch columns, where they apply."""
    if not agg.metrics:
        return []
    primary, columns = agg.metrics[0], []
    if base is not None:
        columns.append(
            Column(f"gain:{primary}", f"\u0394 vs untrained ({metric_header(primary)})", "metric", primary)
        )
    if noise is not None and noise.comparison is not None:
        against = "full Mugs" if noise.full_mugs else "best"
        columns.append(Column(f"noise:{primary}", f"\u0394 vs {against} (Welch, 95%)", "status", primary))
    return columns


def _setting_row(
    i: int,
    record: Any,
    agg: Aggregate,
    makers: list[Any],
    extra: list[Column],
    base: ReferenceRow | None,
    noise: NoiseReport | None,
) -> list[Cell]:
    cells = [make(None if key is None else record[key]) for key, make in makers]
    cells += [_metric_cell(record, m) for m in agg.metrics]
    cells.append(Cell(str(int(record["n"]))))
    for column in extra:
        mean = record[f"{column.metric}.mean"] if record["label"] == "OK" else None
        if column.key.startswith("gain:"):
            cells.append(_gain_cell(gain(None if is_missing(mean) else mean, base, str(column.metric))))
        else:
            cells.append(_noise_cell(noise.marks.get(i) if noise is not None else None))
    note = record["note"]
    state = None if not note else (record["label"] if record["label"] != "OK" else "INCOMPLETE")
    cells.append(Cell(note or "OK", state=state))
    return cells


def _reference_row(
    ref: ReferenceRow, n_settings: int, metrics: Sequence[str], extra: list[Column], base: ReferenceRow | None
) -> list[Cell]:
    cells = [Cell(ref.label, state="REFERENCE")] + [Cell("")] * max(0, n_settings - 1)
    for m in metrics:
        if ref.state != "OK":
            cells.append(Cell(ref.state, state=ref.state))
        elif ref.values.get(m) is None:
            cells.append(Cell(NOT_MEASURED, state="NOT_MEASURED"))
        else:
            cells.append(Cell(stat_text(ref.mean(m), ref.std(m)), mean=ref.mean(m), std=ref.std(m)))
    cells.append(Cell(str(ref.n)))
    for column in extra:
        own = column.key.startswith("gain:") and ref is not base
        cells.append(
            _gain_cell(gain(ref.mean(str(column.metric)), base, str(column.metric)))
            if own
            else Cell("\u2014")
        )
    cells.append(Cell("reference" + (f" ({ref.note})" if ref.note else ""), state="REFERENCE"))
    return cells


def results_table(
    agg: Aggregate,
    title: str,
    references: Sequence[ReferenceRow] = (),
    noise: NoiseReport | None = None,
) -> Table:
    """The main table: the reference rows (a block on top), then one row per setting.

    With an untrained reference, a "Δ vs untrained" column (primary metric); with a comparison
    row, the Welch column (:mod:`reports.noise`). See the module docstring.
    """
    setting_cols, makers = _setting_columns(agg)
    if references and not setting_cols:  # nothing swept: a label column for the reference rows
        setting_cols, makers = [Column("row", "", "setting")], [(None, lambda _: Cell("this sweep"))]
    metric_cols = [Column(f"metric:{m}", metric_header(m), "metric", m) for m in agg.metrics]
    base = untrained(references)
    extra = _extra_columns(agg, base, noise)
    columns = [
        *setting_cols,
        *metric_cols,
        Column("n", "n", "count"),
        *extra,
        Column("status", "status", "status"),
    ]
    rows = [_reference_row(r, len(setting_cols), agg.metrics, extra, base) for r in references]
    for i, (_, record) in enumerate(agg.table.iterrows()):
        rows.append(_setting_row(i, record, agg, makers, extra, base, noise))
    table = Table(title=title, columns=columns, rows=rows, reference_rows=len(references))
    table.notes = results_notes(agg, table, references, noise)
    return table


def results_notes(
    agg: Aggregate, table: Table, references: Sequence[ReferenceRow], noise: NoiseReport | None
) -> list[str]:
    """What the results table's marks, columns and reference rows mean."""
    notes = [
        f"mean \u00b1 sample std (ddof=1) over finished seeds; n = finished seeds; best per column in bold "
        f"({', '.join(metric_header(m) + (' (lower is better)' if lower_is_better(m) else '') for m in agg.metrics)})."
    ]
    if any(c.mark for row in table.rows for c in row):
        notes.append(
            f"{CHECK} / {CROSS}: loss on / off (IDS: instance, LGDS: local-group, GDS: group discrimination)."
        )
    notes += reference_notes(agg, references)
    if noise is not None and noise.comparison is not None:
        notes += noise_notes(agg, noise)
    return notes


def reference_notes(agg: Aggregate, references: Sequence[ReferenceRow]) -> list[str]:
    """The reference block explained (or why there is none)."""
    if not references:
        return [
            "no reference rows: this sweep has no reference trials (it predates them); rerun "
            "`mugs-orch sweep` on its spec to add them (finished trials are not rerun)."
        ]
    notes = [
        "reference rows (top block, not ranked, never best): the base configuration (swept keys at the "
        "preset's values) with the same seeds, trained 0 steps, evaluated with the same protocols; "
        f"{NOT_MEASURED!r}: that protocol was not run on it."
    ]
    if any(r.kind == PIXELS for r in references):
        notes.append(
            "reference: raw pixels = the same weighted kNN (same k's and temperature) on the evaluation "
            "transform's pixels, flattened, centred by the training mean, cosine similarity."
        )
    if agg.metrics and untrained(references) is not None:
        notes.append(
            f"\u0394 vs untrained = the row's {metric_header(agg.metrics[0])} mean minus the untrained network's."
        )
    return notes


def noise_notes(agg: Aggregate, noise: NoiseReport) -> list[str]:
    """How the Welch column reads, and the one-seed caveat where it applies."""
    which = "the full-Mugs row (all three losses on)" if noise.full_mugs else "the best row"
    notes = [
        f"\u0394 vs {'full Mugs' if noise.full_mugs else 'best'}: difference of {metric_header(noise.metric)} "
        f"means to {which}: {setting_text(agg, int(noise.comparison or 0))}; tested with {TEST_NAME} at 95%: "
        f"p < {ALPHA:g} is {SIGNIFICANT!r}, otherwise {WITHIN_NOISE!r} (the difference does not exceed "
        "the seed noise)."
    ]
    if noise.untestable:
        notes.append(
            "with one seed no claim about differences can be made: rows marked "
            f"{UNTESTABLE!r} have fewer than two finished seeds on one side (run more seeds)."
        )
    return notes


def _published_cell(entry: PublishedEntry, metric: str) -> Cell:
    value = entry.value(metric)
    if value.value is None:
        return Cell(NO_SOURCE, state="NO_SOURCE")
    return Cell(f"{value.value:.1f}", mean=value.value)


def _sources_text(entry: PublishedEntry, metrics: Sequence[str]) -> str:
    keys = sorted({v.source.key for m in metrics if (v := entry.value(m)).source is not None})
    return ", ".join(keys) if keys else NO_SOURCE


def comparison_tables(comparisons: Sequence[Comparison], agg: Aggregate, published: Published) -> list[Table]:
    """Published vs reproduced: one table per published Mugs setting that some sweep settings match.

    Rows: the published numbers, one row per matching sweep setting (mean ± std over its seeds,
    with the gap to the published value), then the comparison methods' published numbers.
    """
    groups: dict[int, list[Comparison]] = {}
    for cmp in comparisons:
        groups.setdefault(id(cmp.reference), []).append(cmp)
    return [_comparison_table(group, agg, published) for group in groups.values()]


def _comparison_table(group: Sequence[Comparison], agg: Aggregate, published: Published) -> Table:
    metrics = agg.metrics
    ref = group[0].reference
    arch = published.arch_label(ref.arch)
    columns = [Column("row", "", "setting")]
    for m in metrics:
        columns += [
            Column(f"metric:{m}", metric_header(m), "metric", m),
            Column(f"gap:{m}", "gap", "metric", m),
        ]
    columns.append(Column("source", "source", "status"))
    blank = Cell("")
    rows: list[list[Cell]] = []
    head = [Cell(f"Mugs, published ({arch}, {ref.epochs} ep)")]
    for m in metrics:
        head += [_published_cell(ref, m), blank]
    rows.append(head + [Cell(_sources_text(ref, metrics))])
    for cmp in group:
        n = max((r[2] for r in cmp.reproduced.values()), default=0)
        label = setting_text(agg, cmp.row) if agg.keys else "this sweep"
        row = [Cell(f"reproduced: {label} (n={n})")]
        for m in metrics:
            mean, std, _ = cmp.reproduced[m]
            row.append(Cell(stat_text(mean, std), mean=mean, std=std) if mean is not None else Cell("n/a"))
            g = cmp.gap[m]
            row.append(Cell(f"{g:+.{DECIMALS}f}", mean=g) if g is not None else Cell("\u2014"))
        rows.append(row + [Cell("MLflow")])
    others = group[0].others
    for other in others:
        if all(other.value(m).value is None for m in metrics):
            label = other.method
        else:
            epochs = f"{other.epochs} ep" if other.epochs is not None else "epochs not stated"
            label = f"{other.method} ({published.arch_label(other.arch) if other.arch else arch}, {epochs})"
        row = [Cell(label)]
        for m in metrics:
            row += [_published_cell(other, m), blank]
        rows.append(row + [Cell(_sources_text(other, metrics))])
    context = group[0].context
    notes = [
        "gap = reproduced mean \u2212 published value; matched on arch, patch size, epochs and dataset "
        f"({context.dataset} taken as {ref.dataset}) with all three losses on."
    ]
    used: dict[str, Source] = {}
    for entry in [ref, *others]:
        for m in metrics:
            src = entry.value(m).source
            if src is not None:
                used[src.key] = src
    notes += [f"{s.key}: {s.url} \u2014 {s.where}" for s in used.values()]
    if any(c.state == "NO_SOURCE" for row in rows for c in row):
        notes.append(f'"{NO_SOURCE}": the cell is left empty because no published number could be checked.')
    title = f"Published vs reproduced: Mugs {arch}, {ref.epochs} epochs, ImageNet-1K"
    return Table(title=title, columns=columns, rows=rows, notes=notes)


def setting_text(agg: Aggregate, row: int) -> str:
    """A one-line description of setting ``row`` (``IDS ✓ LGDS ✗ GDS ✓, top-k 8``)."""
    record = agg.table.iloc[row]
    parts = []
    for key in agg.keys:
        value = record[key]
        if key == LOSS_WEIGHTS and isinstance(value, tuple) and len(value) == 3:
            if binary_weights([value]):
                parts.append(
                    " ".join(
                        f"{n} {CHECK if float(w) > 0 else CROSS}"
                        for n, w in zip(LOSS_NAMES, value, strict=True)
                    )
                )
            else:
                parts.append(f"weights {_weights_text(value)}")
        else:
            parts.append(
                f"{key_header(key)} {format_number(value) if not is_missing(value) else chr(0x2014)}"
            )
    return ", ".join(parts) if parts else "all trials"
