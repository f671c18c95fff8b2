"""``mugs-orch report SWEEP``: the sweep report from the command line.

The integrator adds the subcommand with :func:`add_report_parser` and dispatches to
:func:`run_report` (with the resolved tracking URI) or :func:`cmd_report` (resolves it itself).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from reports.formats import FORMATS

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand to ``subparsers`` and return its parser.

    ``--tracking-uri`` and ``--workdir`` default to ``argparse.SUPPRESS`` so values given before
    the subcommand (on the main parser) are kept unless repeated after it.
    """
    p = subparsers.add_parser(
        "report",
        help="tables and figures of a sweep from MLflow (Markdown, LaTeX, CSV, HTML)",
        description=(
            "Compile a sweep's results (seeds aggregated per setting, best per column marked, "
            "failed/missing trials shown, published numbers compared) and log them to the sweep's "
            "parent run under report/."
        ),
    )
    p.add_argument("sweep", help="sweep name (tag mugs.sweep of the parent run)")
    p.add_argument(
        "--format",
        dest="formats",
        default=",".join(FORMATS),
        help=f"comma list of {','.join(FORMATS)} (default: all)",
    )
    p.add_argument("--out", help="output directory (default: WORKDIR/reports/SWEEP)")
    p.add_argument(
        "--metrics",
        help="comma list of metric columns (default: the spec's report.metrics, else eval/knn_top1,eval/linear_top1)",
    )
    p.add_argument(
        "--no-log-artifacts",
        dest="log_artifacts",
        action="store_false",
        help="do not log the report to the sweep's parent run",
    )
    p.add_argument(
        "--tracking-uri",
        default=argparse.SUPPRESS,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite under the work dir)",
    )
    p.add_argument("--workdir", default=argparse.SUPPRESS, help="work directory (default: ./runs)")
    return p


def _formats(text: str) -> list[str]:
    formats = []
    for item in (text or "").split(","):
        item = item.strip().lower()
        if item and item not in formats:
            formats.append(item)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(
            f"--format: unknown format(s) {', '.join(unknown) or '(none)'} (known: {', '.join(FORMATS)})"
        )
    return formats


def default_out_dir(workdir: Path, sweep: str) -> Path:
    """``WORKDIR/reports/<sweep name made file-safe>``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", sweep).strip("._") or "sweep"
    return Path(workdir) / "reports" / safe


def run_report(args: argparse.Namespace, tracking_uri: str) -> int:
    """Run ``mugs-orch report`` with parsed ``args`` against ``tracking_uri``; returns the exit code.

    0: written (and logged); 1: MLflow or I/O error; 2: usage error or no such sweep.
    """
    from mlflow.exceptions import MlflowException  # here: every mugs-orch command builds this parser

    from reports.fetch import SweepNotFoundError
    from reports.report import ArtifactLogError, build_report

    prog = "mugs-orch report"
    try:
        formats = _formats(getattr(args, "formats", ",".join(FORMATS)))
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    metrics_text = getattr(args, "metrics", None)
    metrics = [m.strip() for m in metrics_text.split(",") if m.strip()] if metrics_text else None
    workdir = Path(getattr(args, "workdir", None) or "runs")
    out = Path(args.out) if getattr(args, "out", None) else default_out_dir(workdir, args.sweep)
    try:
        result = build_report(
            tracking_uri,
            args.sweep,
            out,
            formats=formats,
            metrics=metrics,
            log_artifacts=getattr(args, "log_artifacts", True),
        )
    except ArtifactLogError as exc:
        for path in exc.result.files:
            print(f"  {path}")
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except SweepNotFoundError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (MlflowException, OSError) as exc:
        print(f"{prog}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    doc = result.document
    if doc.notice:
        print(f"{doc.notice.headline}: {doc.notice.text}")
    print(
        f"report of sweep {args.sweep!r} ({len(result.aggregate.table)} settings, {len(result.data.runs)} runs):"
    )
    for path in result.files:
        print(f"  {path}")
    if result.artifact_dir:
        print(f"logged to run {result.data.parent_id} under {result.artifact_dir}/")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """Resolve the tracking URI like the other subcommands, then :func:`run_report`."""
    from orchestration.tracking.uri import resolve_tracking_uri

    uri = resolve_tracking_uri(
        getattr(args, "tracking_uri", None), Path(getattr(args, "workdir", None) or "runs")
    )
    return run_report(args, uri)
