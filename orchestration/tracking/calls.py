"""Making one tracking call in this process, where a failure only warns.

:func:`make_call` is what a job's call becomes wherever it is made: in the job itself, or in
its tracking agent (:mod:`orchestration.tracking.agent`), which makes the calls the job sent
it. The metrics calls (``metrics_open`` / ``step`` / ``wake`` / ``metrics_close``) drive one
:class:`~orchestration.tracking.logger.MlflowMetricsCallback` per process. MLflow is imported
on the first call, not with this module.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestration import tracking

CALLS = ("set_tags", "set_status", "sync_spool", "log_metrics", "log_artifact")
METRICS_CALLS = ("metrics_open", "step", "wake", "metrics_close")

_metrics: Any = None  # this process's metrics logger, between metrics_open and metrics_close


def safe(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``, or None with a warning on stderr if it raised."""
    try:
        return call(*args, **kwargs)
    except Exception as e:
        name = getattr(call, "__name__", "tracking call")
        print(
            f"warning: MLflow {name} failed ({type(e).__name__}: {str(e)[:200]}); continuing", file=sys.stderr
        )
        return None


def make_call(op: str, args: tuple) -> None:
    """One call of :data:`CALLS` (a function of :mod:`orchestration.tracking`, same arguments) or
    of :data:`METRICS_CALLS`, made now."""
    if op in CALLS:
        safe(getattr(tracking, op), *args)
    elif op in METRICS_CALLS:
        safe(_metrics_call, op, args)
    else:
        raise ValueError(f"not a tracking call: {op!r}")


def _metrics_call(op: str, args: tuple) -> None:
    global _metrics
    if op == "metrics_open":
        _metrics = tracking.MlflowMetricsCallback(args[0], args[1], Path(args[2]))
    elif _metrics is None:
        return
    elif op == "step":
        _metrics.add(dict(args[1]), int(args[0]))
    elif op == "wake":
        _metrics.on_checkpoint(None, None)
    else:
        metrics, _metrics = _metrics, None
        metrics.close()
