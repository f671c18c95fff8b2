"""MLflow tracking for Mugs jobs: URIs, run params/tags/status, and a non-blocking metrics logger.

Everything here uses an explicit ``MlflowClient(tracking_uri=...)``, never MLflow's global
fluent state. The trainer (``mugs``) never imports this package; it only sees
:class:`MlflowMetricsCallback` through the ``mugs.callbacks.Callback`` interface.

The names below are loaded on first use (PEP 562), so that importing the package, or its
MLflow-free modules (``agent``, ``spool``, ``failfast``, ``uri``), does not import MLflow.
"""

from __future__ import annotations

import importlib
from typing import Any

_SOURCES = {  # name -> the submodule defining it (imported on first use: MLflow is slow to import)
    "MlflowMetricsCallback": "logger",
    "PARENT_RUN_TAG": "runs",
    "SpoolSyncError": "logger",
    "TrackingUnavailableWarning": "logger",
    "TrackingUnreachable": "uri",
    "apply_fail_fast_env": "failfast",
    "check_reachable": "uri",
    "client_for": "runs",
    "create_run": "runs",
    "fail_fast_env": "failfast",
    "fail_fast_http": "failfast",
    "find_runs": "runs",
    "flatten_config": "params",
    "get_or_create_experiment": "runs",
    "get_status": "runs",
    "is_secret_key": "params",
    "log_artifact": "runs",
    "log_metrics": "logger",
    "redact": "params",
    "redact_uri": "uri",
    "resolve_tracking_uri": "uri",
    "run_tags_for_environment": "runs",
    "set_status": "runs",
    "set_tags": "runs",
    "sync_spool": "logger",
}

__all__ = [
    "PARENT_RUN_TAG",
    "MlflowMetricsCallback",
    "SpoolSyncError",
    "TrackingUnreachable",
    "TrackingUnavailableWarning",
    "apply_fail_fast_env",
    "check_reachable",
    "client_for",
    "create_run",
    "fail_fast_env",
    "fail_fast_http",
    "find_runs",
    "flatten_config",
    "get_or_create_experiment",
    "get_status",
    "is_secret_key",
    "log_artifact",
    "log_metrics",
    "redact",
    "redact_uri",
    "resolve_tracking_uri",
    "run_tags_for_environment",
    "set_status",
    "set_tags",
    "sync_spool",
]


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{source}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SOURCES))
