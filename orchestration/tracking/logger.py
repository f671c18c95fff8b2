"""Training metrics to MLflow without slowing training or losing a point when the server is down.

:class:`MlflowMetricsCallback` only appends to a list on the training thread; a daemon thread
sends batches with ``MlflowClient.log_batch``. When a send fails, the rows go to an on-disk
spool (:mod:`orchestration.tracking.spool`) and a warning is shown once per outage; later
flushes replay the spool first. :func:`sync_spool` delivers a spool later from any process.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.utils.validation import MAX_METRICS_PER_BATCH

from mugs.callbacks import Callback
from orchestration.tracking import spool
from orchestration.tracking.failfast import apply_fail_fast_env
from orchestration.tracking.runs import client_for
from orchestration.tracking.uri import redact_uri

DEFAULT_PREFIX = "train/"


class TrackingUnavailableWarning(UserWarning):
    """MLflow could not be reached; metrics are kept in a spool file for a later sync."""


class SpoolSyncError(RuntimeError):
    """A spool could not be fully delivered; what was not delivered stays in the spool."""

    def __init__(self, message: str, delivered: int, remaining: int) -> None:
        super().__init__(message)
        self.delivered = delivered
        self.remaining = remaining


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _rows(run_id: str, metrics: Mapping[str, Any], step: int, timestamp_ms: int, prefix: str) -> list[dict]:
    """Spool rows for one step: every numeric entry except ``step``, keyed ``prefix + name``."""
    rows = []
    for name, value in metrics.items():
        if name == "step" or isinstance(value, (str, bytes)) or value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        rows.append(
            {
                "run_id": run_id,
                "key": f"{prefix}{name}",
                "value": number,
                "timestamp": timestamp_ms,
                "step": step,
            }
        )
    return rows


def _sender(tracking_uri: str, run_id: str):
    """A ``send(rows)`` for :func:`spool.replay`: one ``log_batch`` call; refuses other runs' rows."""

    def send(rows: list[dict]) -> None:
        for row in rows:
            if row.get("run_id", run_id) != run_id:
                raise ValueError(f"spool row of run {row['run_id']!r} while syncing run {run_id!r}")
        metrics = [Metric(r["key"], float(r["value"]), int(r["timestamp"]), int(r["step"])) for r in rows]
        client_for(tracking_uri).log_batch(run_id, metrics=metrics, synchronous=True)

    return send


def _describe(exc: BaseException) -> str:
    text = redact_uri(f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__)
    return text if len(text) <= 300 else text[:297] + "..."


def _warn_unavailable(tracking_uri: str, spool_path: Path, exc: BaseException) -> None:
    message = (
        f"mlflow unreachable at {redact_uri(tracking_uri)}: buffering metrics to {spool_path}; "
        f"they will be synced later ({_describe(exc)})"
    )
    warnings.warn(message, TrackingUnavailableWarning, stacklevel=3)
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


class MlflowMetricsCallback(Callback):
    """Logs the trainer's metrics to an MLflow run, asynchronously, with an on-disk fallback.

    Trainer keys map to ``prefix + key`` (``loss`` -> ``train/loss``, ``loss/instance`` ->
    ``train/loss/instance``, ``lr``, ``wd``, ``momentum``, ``teacher_temp``, ``images_per_s``,
    ``epoch`` likewise) at MLflow step ``metrics["step"]``, with the wall-clock time of the step.

    ``on_step_end`` costs about a microsecond (a dict copy and a list append under a lock). A
    daemon thread flushes every ``flush_interval_s`` (and at each checkpoint) with
    ``log_batch`` calls of at most ``max_batch`` metrics. If a call fails for any reason, the
    rows are appended to ``spool_path`` (durably) and a :class:`TrackingUnavailableWarning` plus
    a line on stderr are emitted once per outage; later flushes first replay the spool.
    ``on_train_end`` calls :meth:`close`, which bounds the final flush to ``close_timeout_s``;
    anything not delivered by then is in the spool, for :func:`sync_spool`.

    With ``fail_fast`` (default), MLflow's HTTP retries/timeout are bounded for this process
    unless already set (:func:`~orchestration.tracking.failfast.apply_fail_fast_env`).
    """

    def __init__(
        self,
        tracking_uri: str,
        run_id: str,
        spool_path: Path,
        prefix: str = DEFAULT_PREFIX,
        flush_interval_s: float = 5.0,
        max_batch: int = MAX_METRICS_PER_BATCH,
        *,
        close_timeout_s: float = 30.0,
        fail_fast: bool = True,
    ) -> None:
        if flush_interval_s <= 0:
            raise ValueError("flush_interval_s must be > 0")
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.spool_path = Path(spool_path)
        self.prefix = prefix
        self.flush_interval_s = float(flush_interval_s)
        self.max_batch = max(1, min(int(max_batch), MAX_METRICS_PER_BATCH))
        self.close_timeout_s = float(close_timeout_s)
        if fail_fast:
            apply_fail_fast_env()
        self.delivered = 0  # metrics sent to MLflow (including replayed ones)
        self.spooled = 0  # metrics written to the spool
        self._buffer: list[tuple[int, dict[str, Any]]] = []
        self._lock = threading.Lock()  # guards _buffer (the only lock the training thread takes)
        self._state_lock = threading.Lock()  # guards _inflight / _abandoned against close()
        self._inflight: list[dict] = []
        self._abandoned = False
        self._carry: list[dict] = []  # rows neither delivered nor spooled (spool write failed)
        self._outage = False
        self._closed = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_guard = threading.Lock()

    # ------------------------------------------------------------ callback API
    def on_train_start(self, trainer: Any) -> None:
        self._ensure_thread()

    def on_step_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        self.add(metrics, _now_ms())

    def add(self, metrics: Mapping[str, Any], timestamp_ms: int) -> None:
        """One step's metrics, stamped ``timestamp_ms`` (a tracking agent's rows keep the job's time)."""
        item = (int(timestamp_ms), dict(metrics))
        with self._lock:
            self._buffer.append(item)
        if self._thread is None or self._closed:
            self._late_item()

    def on_checkpoint(self, trainer: Any, path: Path) -> None:
        self._wake.set()

    def on_train_end(self, trainer: Any, status: str) -> None:
        self.close()

    # ------------------------------------------------------------------ public
    def close(self, timeout_s: float | None = None) -> bool:
        """Final flush, bounded by ``timeout_s`` (default ``close_timeout_s``); stops the thread.

        Returns True if the flush finished in time (every metric delivered or spooled). On a
        timeout, what the thread still held is written to the spool from here and False returned
        (a request still in flight may then also reach MLflow: a later replay re-sends identical
        rows, which MLflow's SQL store ignores). Idempotent.
        """
        if self._closed:
            return True
        self._closed = True
        timeout_s = self.close_timeout_s if timeout_s is None else timeout_s
        with self._lock:
            has_rows = bool(self._buffer)
        if self._thread is None and not has_rows and not self.spool_path.exists():
            return True
        self._ensure_thread(force=True)
        assert self._thread is not None
        self._stop.set()
        self._wake.set()
        self._thread.join(max(timeout_s, 0.0))
        if not self._thread.is_alive():
            if self._carry:  # the spool could not be written either (disk full, read-only, ...)
                print(
                    f"WARNING: {len(self._carry)} metric(s) could be neither sent to "
                    f"{redact_uri(self.tracking_uri)} nor written to {self.spool_path}",
                    file=sys.stderr,
                    flush=True,
                )
                return False
            return True
        with self._state_lock:
            self._abandoned = True
            rows, self._inflight = self._inflight, []
        with self._lock:
            items, self._buffer = self._buffer, []
        rows = rows + self._expand(items)
        spool.append(self.spool_path, rows)
        self.spooled += len(rows)
        print(
            f"WARNING: final MLflow flush to {redact_uri(self.tracking_uri)} did not finish within "
            f"{timeout_s:.0f}s; metrics not yet confirmed are in {self.spool_path}",
            file=sys.stderr,
            flush=True,
        )
        return False

    # ---------------------------------------------------------------- internals
    def _ensure_thread(self, force: bool = False) -> None:
        with self._thread_guard:
            if self._thread is not None or (self._closed and not force):
                return
            self._thread = threading.Thread(target=self._run, name="mlflow-metrics-flush", daemon=True)
            self._thread.start()

    def _late_item(self) -> None:
        """A step logged before the thread started (start it) or after close (spool it now)."""
        if not self._closed:
            self._ensure_thread()
            return
        with self._lock:
            items, self._buffer = self._buffer, []
        rows = self._expand(items)
        spool.append(self.spool_path, rows)
        self.spooled += len(rows)

    def _expand(self, items: list[tuple[int, dict[str, Any]]]) -> list[dict]:
        rows: list[dict] = []
        for timestamp_ms, metrics in items:
            rows.extend(_rows(self.run_id, metrics, int(metrics.get("step", 0)), timestamp_ms, self.prefix))
        return rows

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            stopping = self._stop.is_set()
            try:
                self._flush()
            except Exception as exc:  # the flush thread must survive anything
                print(f"WARNING: MLflow metrics flush failed: {_describe(exc)}", file=sys.stderr, flush=True)
            if stopping:
                return

    def _flush(self) -> None:
        with self._lock:
            items, self._buffer = self._buffer, []
        rows = self._carry + self._expand(items)
        self._carry = []
        with self._state_lock:
            self._inflight = rows
        send = _sender(self.tracking_uri, self.run_id)
        failure: BaseException | None = None
        replayed = 0
        if self.spool_path.exists():
            try:
                result = spool.replay(self.spool_path, send, self.max_batch, wait_s=0.0)
                replayed, failure = result.delivered, result.error
            except Exception as exc:  # e.g. the spool is unreadable: keep this flush's rows safe
                failure = exc
            self.delivered += replayed
        sent = 0
        if failure is None:
            for start in range(0, len(rows), self.max_batch):
                chunk = rows[start : start + self.max_batch]
                try:
                    send(chunk)
                except Exception as exc:  # unreachable, timeout, server error: spool and go on
                    failure = exc
                    break
                sent += len(chunk)
        self.delivered += sent
        unsent = rows[sent:]
        with self._state_lock:
            if unsent and not self._abandoned:
                try:
                    spool.append(self.spool_path, unsent)
                    self.spooled += len(unsent)
                except OSError as exc:
                    self._carry = unsent  # keep them in memory; try again next flush
                    print(
                        f"WARNING: cannot write the MLflow spool {self.spool_path}: {_describe(exc)}",
                        file=sys.stderr,
                        flush=True,
                    )
            self._inflight = []
        if failure is not None:
            if not self._outage:
                self._outage = True
                _warn_unavailable(self.tracking_uri, self.spool_path, failure)
        elif self._outage and (sent or replayed):
            self._outage = False
            print(
                f"mlflow reachable again at {redact_uri(self.tracking_uri)}; spooled metrics synced",
                file=sys.stderr,
                flush=True,
            )


def sync_spool(tracking_uri: str, run_id: str, spool_path: Path, wait_s: float = 60.0) -> int:
    """Deliver the metrics spooled for ``run_id`` at ``spool_path``; returns how many were sent.

    Delivered rows are removed from the spool (the file is deleted once empty), so calling this
    again returns 0. Waits up to ``wait_s`` if another process is replaying the same spool
    (then raises ``TimeoutError``). If delivery fails part way, raises :class:`SpoolSyncError`
    (``delivered``/``remaining``); the rest stays spooled for a later call.
    """
    spool_path = Path(spool_path)
    result = spool.replay(spool_path, _sender(tracking_uri, run_id), MAX_METRICS_PER_BATCH, wait_s=wait_s)
    if result.busy:
        raise TimeoutError(f"{spool_path} is being replayed by another process (waited {wait_s:.0f}s)")
    if result.error is not None:
        remaining = spool.count(spool_path)
        raise SpoolSyncError(
            f"synced {result.delivered} metric(s) to {redact_uri(tracking_uri)}, {remaining} left in "
            f"{spool_path}: {_describe(result.error)}",
            result.delivered,
            remaining,
        ) from result.error
    return result.delivered


def log_metrics(
    tracking_uri: str, run_id: str, metrics: Mapping[str, float], step: int, spool_path: Path
) -> bool:
    """Log one-off metrics (e.g. evaluation results) now; spool them if MLflow is unreachable.

    Keys are used as given (no prefix). Returns True if delivered, False if spooled (with a
    :class:`TrackingUnavailableWarning`); :func:`sync_spool` delivers them later.
    """
    rows = _rows(run_id, metrics, int(step), _now_ms(), prefix="")
    if not rows:
        return True
    send = _sender(tracking_uri, run_id)
    sent = 0
    try:
        while sent < len(rows):
            chunk = rows[sent : sent + MAX_METRICS_PER_BATCH]
            send(chunk)
            sent += len(chunk)
    except Exception as exc:
        spool.append(Path(spool_path), rows[sent:])
        _warn_unavailable(tracking_uri, Path(spool_path), exc)
        return False
    return True
