"""Where MLflow data goes: the tracking URI from the CLI, the environment, or a local sqlite store."""

from __future__ import annotations

import os
import re
from pathlib import Path

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
DB_NAME = "mlflow.db"

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
# a query or fragment parameter whose name says secret: ?token=..., &api_key=..., #access_token=...
_SECRET_PARAM = re.compile(
    r"(?P<lead>[?&#;](?:[A-Za-z0-9_.-]*?)(?:token|secret|passw(?:or)?d|api[_-]?key|key|auth|signature|sig|credential)"
    r"[A-Za-z0-9_.-]*=)[^&#\s'\"]+",
    re.IGNORECASE,
)


def resolve_tracking_uri(cli_value: str | None, workdir: Path) -> str:
    """The tracking URI to use: ``cli_value``, else ``$MLFLOW_TRACKING_URI``, else a sqlite store.

    The fallback is ``sqlite:///<absolute workdir>/mlflow.db``; ``workdir`` is created for it.
    Empty strings count as unset.
    """
    if cli_value and cli_value.strip():
        return cli_value.strip()
    env_value = os.environ.get(ENV_TRACKING_URI, "").strip()
    if env_value:
        return env_value
    root = Path(workdir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / DB_NAME}"


def local_artifact_root(uri: str) -> Path | None:
    """Where a sqlite store's artifacts go: ``mlruns/`` beside the database file (MLflow's own
    default is ``./mlruns`` of whatever directory the process runs in). None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    db = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(db).expanduser().resolve().parent / "mlruns" if db and db != ":memory:" else None


def redact_uri(uri: str) -> str:
    """``uri`` (or any text holding URIs) fit for logs, warnings, tags and artifacts: credentials in
    the authority part (``user:pass@``) and secret-named query parameters (``?token=``) masked."""
    masked = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", uri)
    return _SECRET_PARAM.sub(lambda m: f"{m.group('lead')}***", masked)


class TrackingUnreachable(RuntimeError):
    """The tracking server does not answer (raised before anything is created)."""


def check_reachable(uri: str, timeout_s: float = 10.0) -> None:
    """For an HTTP(S) tracking URI, ask the server's ``/health`` (MLflow answers "OK"); other
    stores (sqlite, a directory) are local and need no check."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    base = uri.rstrip("/")
    request = urllib.request.Request(f"{base}/health", method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 - http(s) only
            if resp.status == 200:
                return
            problem = f"HTTP {resp.status}"
    except urllib.error.HTTPError as e:
        problem = f"HTTP {e.code}"
    except (OSError, ValueError) as e:
        problem = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
    raise TrackingUnreachable(
        f"--tracking-uri {redact_uri(uri)}: the tracking server does not answer ({redact_uri(problem)}); "
        "start it or point --tracking-uri elsewhere (nothing was created)"
    )
