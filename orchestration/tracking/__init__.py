"""MLflow tracking for Mugs jobs: URIs, run params/tags/status, and a non-blocking metrics logger.

Everything here uses an explicit ``MlflowClient(tracking_uri=...)``, never MLflow's global
fluent state. The trainer (``mugs``) never imports this package; it only sees
:class:`MlflowMetricsCallback` through the ``mugs.callbacks.Callback`` interface.
"""

from orchestration.tracking.failfast import apply_fail_fast_env, fail_fast_env, fail_fast_http
from orchestration.tracking.logger import (
    MlflowMetricsCallback,
    SpoolSyncError,
    TrackingUnavailableWarning,
    log_metrics,
    sync_spool,
)
from orchestration.tracking.params import flatten_config, is_secret_key, redact
from orchestration.tracking.runs import (
    PARENT_RUN_TAG,
    client_for,
    create_run,
    find_runs,
    get_or_create_experiment,
    get_status,
    log_artifact,
    run_tags_for_environment,
    set_status,
    set_tags,
)
from orchestration.tracking.uri import TrackingUnreachable, check_reachable, redact_uri, resolve_tracking_uri

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
