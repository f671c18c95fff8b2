"""Compile a sweep report: fetch from MLflow, aggregate, compare, plot, render, write, log.

Every results table carries the sweep's reference rows (:mod:`reports.references`: untrained
network, raw pixels) with each setting's gain over the untrained network, and marks which
differences to the comparison row exceed the seed noise (:mod:`reports.noise`, Welch's t-test).

:func:`build_report` is the whole pipeline; the CLI (:mod:`reports.cli`) only parses arguments.
Files written to ``out_dir``: ``report.md``, ``report.tex``, ``report.csv``, ``report.html`` (as
requested), ``plots/*.png`` (with md, tex or html) and ``report.json`` (facts and timings).
They are also logged as artifacts of the sweep's parent run under ``report/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient

from mugs.atomic import atomic_path, atomic_write_text
from mugs.diagnostics import DIAG_BRANCHES, branch_kinds, diag_key
from orchestration.reference import REFERENCE_COLUMN
from orchestration.tracking.logger import DEFAULT_PREFIX as TRAIN_PREFIX
from orchestration.tracking.uri import redact_uri
from reports.aggregate import FAILED, MISSING, PRUNED, RUNNING, Aggregate, aggregate, lower_is_better
from reports.compare import Comparison, compare
from reports.document import Notice, ReportDocument
from reports.fetch import SweepData, fetch_histories, fetch_sweep, patient_http
from reports.formats import FORMATS
from reports.noise import NoiseReport, noise_marks
from reports.plots import Plot, make_plots, setting_label
from reports.published import Published, load_published
from reports.references import ReferenceRow, gain, reference_rows, untrained
from reports.render import EXTENSIONS, PLOTS_DIR, RENDERERS
from reports.table import comparison_tables, results_table, setting_text
from reports.values import format_number

DEFAULT_METRICS = ("eval/knn_top1", "eval/linear_top1")
ARTIFACT_DIR = "report"
CURVE_METRIC = "train/loss"
DIAG_CURVE_KEYS = tuple(diag_key(b, k) for b in DIAG_BRANCHES for k in branch_kinds(b))
CURVE_SETTINGS = 8
CURVE_RUNS_PER_SETTING = 3


class ArtifactLogError(RuntimeError):
    """The report was written but logging it to the parent run failed; ``result`` has the files."""

    def __init__(self, result: ReportResult, cause: BaseException) -> None:
        super().__init__(
            f"report written to {result.out_dir} but not logged to MLflow: {type(cause).__name__}: {cause}"
        )
        self.result = result


@dataclass
class ReportResult:
    """What :func:`build_report` produced."""

    out_dir: Path
    files: list[Path]
    document: ReportDocument
    data: SweepData
    aggregate: Aggregate
    artifact_dir: str | None
    timings: dict[str, float] = field(default_factory=dict)


def _report_hints(spec: dict[str, Any]) -> dict[str, Any]:
    hints = spec.get("report")
    return hints if isinstance(hints, dict) else {}


def _str_list(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def choose_layout(data: SweepData, metrics: Sequence[str] | None) -> tuple[list[str], list[str], str]:
    """Row keys, metric columns and title from the CLI, the spec's ``report:`` hints, or defaults."""
    hints = _report_hints(data.spec)
    rows = _str_list(hints.get("rows"))
    keys = rows if rows is not None else list(data.axes)
    chosen = list(metrics) if metrics else (_str_list(hints.get("metrics")) or list(DEFAULT_METRICS))
    title = str(hints.get("title") or f"Sweep {data.name}")
    return keys, chosen, title


def _notice(data: SweepData, agg: Aggregate, unlisted: int) -> Notice | None:
    counts = agg.counts
    missing = counts[MISSING] + unlisted
    parts = []
    if counts[RUNNING]:
        parts.append(f"{counts[RUNNING]} trial(s) RUNNING")
    if counts[FAILED]:
        parts.append(f"{counts[FAILED]} FAILED")
    if missing:
        parts.append(f"{missing} MISSING")
    detail = ", ".join(parts)
    if data.state == "running" or counts[RUNNING]:
        why = "the sweep is still running" if data.state == "running" else "trials are still running"
        text = f"{why} (mugs.sweep_state={data.state}){': ' + detail if detail else ''}. Numbers will change."
        return Notice("partial", "PARTIAL RESULTS", text)
    if data.state == "failed":
        return Notice("failed", "SWEEP FAILED", f"mugs.sweep_state=failed{': ' + detail if detail else ''}.")
    if counts[FAILED] or missing:
        return Notice("incomplete", "INCOMPLETE SWEEP", f"{detail}; n counts only finished seeds.")
    return None


def _curves(
    tracking_uri: str, agg: Aggregate, fast_path: bool, key: str = CURVE_METRIC
) -> dict[str, list[pd.DataFrame]]:
    """``key`` (train/loss) histories of a few runs of the best settings (by the first metric)."""
    table = agg.table[agg.table["n"] > 0]
    if table.empty or not agg.metrics:
        return {}
    primary = f"{agg.metrics[0]}.mean"
    ascending = lower_is_better(agg.metrics[0])
    table = table.sort_values(primary, ascending=ascending, na_position="last").head(CURVE_SETTINGS)
    wanted: dict[str, list[str]] = {}
    for _, row in table.iterrows():
        wanted[setting_label(agg, row["setting"])] = list(row["run_ids"][:CURVE_RUNS_PER_SETTING])
    run_ids = [r for ids in wanted.values() for r in ids]
    histories = fetch_histories(tracking_uri, run_ids, key, fast_path=fast_path)
    return {label: [histories[r] for r in ids if r in histories] for label, ids in wanted.items()}


def _diag_curves(
    tracking_uri: str, agg: Aggregate, fast_path: bool
) -> dict[str, dict[str, list[pd.DataFrame]]]:
    """The collapse diagnostics' histories of the same runs as the training curves, by trainer key."""
    out = {key: _curves(tracking_uri, agg, fast_path, TRAIN_PREFIX + key) for key in DIAG_CURVE_KEYS}
    return {key: by for key, by in out.items() if any(by.values())}


def csv_frame(
    agg: Aggregate,
    comparisons: Sequence[Comparison],
    references: Sequence[ReferenceRow] = (),
    noise: NoiseReport | None = None,
) -> pd.DataFrame:
    """One row per setting: swept values, counts, state, per-metric mean/std/n/best, published, gap.

    Then the primary metric's gain over the untrained network and the Welch test against the
    comparison row (``<m>.noise``: significant / within noise / untestable / comparison). The
    reference rows come first, with ``reference`` set (``untrained``, ``pixels``) and no swept values.
    """
    table = agg.table.reset_index(drop=True)
    out = pd.DataFrame({key: [format_number(v) for v in table[key]] for key in agg.keys})
    out.insert(0, REFERENCE_COLUMN, [""] * len(table))
    for column in ("n", "finished", "pruned", "failed", "running", "missing"):
        out[column] = table[column].astype(int) if len(table) else []
    out["status"] = list(table["label"])
    out["note"] = list(table["note"])
    for m in agg.metrics:
        for suffix in ("mean", "std", "n", "best"):
            out[f"{m}.{suffix}"] = list(table[f"{m}.{suffix}"])
    if comparisons:
        for m in agg.metrics:
            published: list[float | None] = [None] * len(table)
            gaps: list[float | None] = [None] * len(table)
            for c in comparisons:
                published[c.row] = c.reference.value(m).value
                gaps[c.row] = c.gap[m]
            out[f"published.{m}"] = published
            out[f"gap.{m}"] = gaps
    if agg.metrics:
        _csv_gains(out, table, agg.metrics[0], references, noise)
    if not references:
        return out
    return pd.concat([_csv_references(agg, references, out.columns), out], ignore_index=True)


def _csv_gains(
    out: pd.DataFrame,
    table: pd.DataFrame,
    metric: str,
    references: Sequence[ReferenceRow],
    noise: NoiseReport | None,
) -> None:
    base = untrained(references)
    out[f"{metric}.gain_vs_untrained"] = [gain(v, base, metric) for v in table[f"{metric}.mean"]]
    marks = [noise.marks.get(i) if noise is not None else None for i in range(len(table))]
    out[f"{metric}.vs_comparison"] = [m.delta if m is not None else None for m in marks]
    for name in ("t", "df", "p"):
        out[f"{metric}.vs_comparison.{name}"] = [
            getattr(m.test, name) if m is not None and m.test is not None else None for m in marks
        ]
    out[f"{metric}.noise"] = [m.verdict if m is not None else "" for m in marks]


def _csv_references(agg: Aggregate, references: Sequence[ReferenceRow], columns: pd.Index) -> pd.DataFrame:
    base = untrained(references)
    rows = []
    for ref in references:
        row: dict[str, Any] = {REFERENCE_COLUMN: ref.kind, "n": ref.n, "status": ref.state, "note": ref.note}
        row.update({state.lower(): count for state, count in ref.counts.items()})
        for m in agg.metrics:
            row |= {f"{m}.mean": ref.mean(m), f"{m}.std": ref.std(m), f"{m}.n": len(ref.values.get(m) or [])}
            row[f"{m}.best"] = False
        if agg.metrics and ref is not base:
            row[f"{agg.metrics[0]}.gain_vs_untrained"] = gain(ref.mean(agg.metrics[0]), base, agg.metrics[0])
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=columns)


def _facts(data: SweepData, agg: Aggregate, tracking_uri: str, unlisted: int) -> list[tuple[str, str]]:
    counts = agg.counts
    known = sum(counts.values())
    expected = data.trials_expected
    trials = f"{counts['FINISHED']} finished, {counts[PRUNED]} pruned, {counts[FAILED]} failed, "
    trials += f"{counts[RUNNING]} running, "
    trials += f"{counts[MISSING] + unlisted} missing"
    trials += f" (of {expected} expected)" if expected is not None else f" ({known} known)"
    return [
        ("sweep", data.name),
        ("state", data.state),
        ("trials", trials),
        ("settings", str(len(agg.table))),
        ("swept keys", ", ".join(agg.keys) or "none"),
        ("parent run", f"{data.parent_id} (experiment {data.experiment_id})"),
        ("tracking", redact_uri(tracking_uri)),
        ("generated", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")),
    ]


def _published_note(agg: Aggregate, data: SweepData) -> str:
    runs = data.runs
    if runs.empty:
        return "no published comparison: the sweep has no runs yet."
    seen: set[tuple[str, str, str]] = set()
    for key in ("model.arch", "train.epochs", "data.dataset"):
        if f"params.{key}" not in runs:
            return f"no published setting matches this sweep (its runs have no {key} param)."
    for _, row in runs.drop_duplicates(
        ["params.model.arch", "params.train.epochs", "params.data.dataset"]
    ).iterrows():
        seen.add(
            tuple(format_number(row[f"params.{k}"]) for k in ("model.arch", "train.epochs", "data.dataset"))
        )
    listed = "; ".join(f"arch={a}, epochs={e}, dataset={d}" for a, e, d in sorted(seen)[:5])
    return (
        "no published setting matches this sweep (published: Mugs on ImageNet-1K with all three losses on; "
        f"this sweep: {listed or 'no runs'})."
    )


def _clean(out_dir: Path) -> None:
    """Remove files of an earlier report in ``out_dir`` that this one would not overwrite."""
    for name in [*EXTENSIONS.values(), "report.json"]:
        (out_dir / name).unlink(missing_ok=True)
    plots = out_dir / PLOTS_DIR
    if plots.is_dir():
        for png in plots.glob("*.png"):
            png.unlink()


def _log_artifacts(tracking_uri: str, run_id: str, out_dir: Path, files: Sequence[Path]) -> str:
    client = MlflowClient(tracking_uri=tracking_uri)
    for path in files:
        rel = path.relative_to(out_dir).parent
        artifact_path = ARTIFACT_DIR if str(rel) == "." else f"{ARTIFACT_DIR}/{rel.as_posix()}"
        client.log_artifact(run_id, str(path), artifact_path)
    return ARTIFACT_DIR


def build_report(
    tracking_uri: str,
    sweep: str,
    out_dir: Path,
    formats: Sequence[str] = FORMATS,
    metrics: Sequence[str] | None = None,
    log_artifacts: bool = True,
    published: Published | None = None,
    fast_path: bool = True,
) -> ReportResult:
    """Compile the report of ``sweep`` into ``out_dir`` (and the parent run's ``report/`` artifacts).

    Raises :class:`reports.fetch.SweepNotFoundError` if there is no such sweep and ValueError for
    an unknown format; :class:`ArtifactLogError` if the files were written but could not be logged.
    """
    unknown = [f for f in formats if f not in RENDERERS]
    if unknown or not formats:
        raise ValueError(f"unknown format(s) {unknown} (known: {', '.join(FORMATS)})")
    with patient_http():
        return _build(
            tracking_uri, sweep, Path(out_dir), list(formats), metrics, log_artifacts, published, fast_path
        )


@dataclass
class _Analysis:
    """What the tables are made of: the layout, the per-setting aggregate and what sits beside it."""

    keys: list[str]
    metrics: list[str]
    title: str
    agg: Aggregate
    comparisons: list[Comparison]
    references: list[ReferenceRow]
    noise: NoiseReport | None
    unlisted: int  # trials the sweep expected that are neither runs nor listed in trials.csv


def _analyse(data: SweepData, metrics: Sequence[str] | None, published: Published) -> _Analysis:
    keys, metric_list, title = choose_layout(data, metrics)
    agg = aggregate(data, keys, metric_list)
    return _Analysis(
        keys=keys,
        metrics=metric_list,
        title=title,
        agg=agg,
        comparisons=compare(agg, data.runs, published, metric_list),
        references=reference_rows(data, metric_list),
        noise=noise_marks(agg, metric_list[0]) if metric_list else None,
        unlisted=max(0, (data.trials_expected or 0) - sum(agg.counts.values())),
    )


def _document(
    data: SweepData, an: _Analysis, tracking_uri: str, sweep: str, published: Published, plots: list[Plot]
) -> ReportDocument:
    agg = an.agg
    notes = list(data.notes)
    if an.unlisted:
        notes.append(
            f"{an.unlisted} of {data.trials_expected} expected trial(s) are neither runs nor listed in trials.csv"
        )
    if agg.unattributed:
        notes.append(
            f"{sum(agg.unattributed.values())} listed trial(s) without axis values could not be put in a row"
        )
    return ReportDocument(
        title=an.title + (" (partial)" if data.state == "running" or agg.counts[RUNNING] else ""),
        sweep=sweep,
        facts=_facts(data, agg, tracking_uri, an.unlisted),
        notice=_notice(data, agg, an.unlisted),
        results=results_table(
            agg, "Per-setting results (mean \u00b1 std over seeds)", an.references, an.noise
        ),
        comparisons=comparison_tables(an.comparisons, agg, published),
        published_note="" if an.comparisons else _published_note(agg, data),
        plots=plots,
        csv=csv_frame(agg, an.comparisons, an.references, an.noise),
        notes=notes,
    )


def _write_files(out_dir: Path, formats: list[str], doc: ReportDocument) -> list[Path]:
    """The report in each format and its plots, each file written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _clean(out_dir)
    files: list[Path] = []
    for fmt in formats:
        path = out_dir / EXTENSIONS[fmt]
        with atomic_path(path) as tmp:
            tmp.write_text(RENDERERS[fmt](doc), encoding="utf-8")
        files.append(path)
    if doc.plots and any(f in formats for f in ("md", "tex")):
        for plot in doc.plots:
            path = out_dir / PLOTS_DIR / f"{plot.name}.png"
            with atomic_path(path) as tmp:
                tmp.write_bytes(plot.png)
            files.append(path)
    return files


def _meta(
    data: SweepData, an: _Analysis, doc: ReportDocument, sweep: str, formats: list[str], files: list[str]
) -> dict[str, Any]:
    """``report.json``: what the report is of, how it was read, and which files it wrote."""
    agg, noise = an.agg, an.noise
    return {
        "sweep": sweep,
        "parent_run_id": data.parent_id,
        "experiment_id": data.experiment_id,
        "state": data.state,
        "partial": doc.partial,
        "notice": None if doc.notice is None else {"kind": doc.notice.kind, "text": doc.notice.text},
        "counts": agg.counts | {"MISSING_UNLISTED": an.unlisted},
        "settings": len(agg.table),
        "runs": len(data.runs),
        "fetch_method": data.fetch_method,
        "keys": an.keys,
        "metrics": an.metrics,
        "published_matches": [setting_text(agg, c.row) for c in an.comparisons],
        "references": [{"kind": r.kind, "n": r.n, "state": r.state} for r in an.references],
        "noise_comparison": None
        if noise is None or noise.comparison is None
        else {
            "row": setting_text(agg, noise.comparison),
            "full_mugs": noise.full_mugs,
            "metric": noise.metric,
        },
        "formats": list(formats),
        "files": files,
    }


def _build(
    tracking_uri: str,
    sweep: str,
    out_dir: Path,
    formats: list[str],
    metrics: Sequence[str] | None,
    log_artifacts: bool,
    published: Published | None,
    fast_path: bool,
) -> ReportResult:
    timings: dict[str, float] = {}
    t = time.perf_counter()
    data = fetch_sweep(tracking_uri, sweep, fast_path=fast_path)
    timings["fetch_runs"] = time.perf_counter() - t

    t = time.perf_counter()
    published = published or load_published()
    an = _analyse(data, metrics, published)
    timings["aggregate"] = time.perf_counter() - t

    want_plots = any(f in formats for f in ("md", "tex", "html"))
    sql = data.fetch_method == "sql"
    t = time.perf_counter()
    curves = _curves(tracking_uri, an.agg, sql) if want_plots else {}
    diag_curves = _diag_curves(tracking_uri, an.agg, sql) if want_plots else {}
    timings["fetch_histories"] = time.perf_counter() - t
    t = time.perf_counter()
    plots: list[Plot] = make_plots(an.agg, curves, diag_curves) if want_plots else []
    timings["plots"] = time.perf_counter() - t

    t = time.perf_counter()
    out_dir = Path(out_dir)
    doc = _document(data, an, tracking_uri, sweep, published, plots)
    files = _write_files(out_dir, formats, doc)
    timings["render"] = time.perf_counter() - t
    meta = _meta(data, an, doc, sweep, formats, [p.relative_to(out_dir).as_posix() for p in files])
    meta["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
    meta_path = out_dir / "report.json"
    atomic_write_text(meta_path, json.dumps(meta, indent=2, default=str) + "\n")
    files.append(meta_path)
    result = ReportResult(out_dir, files, doc, data, an.agg, None, timings)
    if log_artifacts:
        t = time.perf_counter()
        try:
            result.artifact_dir = _log_artifacts(tracking_uri, data.parent_id, out_dir, files)
        except Exception as exc:  # any transport/store error: the files exist, say so
            raise ArtifactLogError(result, exc) from exc
        timings["log_artifacts"] = time.perf_counter() - t
    return result
