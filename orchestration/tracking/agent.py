"""A job's MLflow calls, made by a separate process so that the job never imports MLflow.

Importing MLflow and opening its store take about 1.7 s of one core (``benchmarks/
trial_overhead.py``); a trainer's start-up is single-threaded Python (torch, timm), so a second
process does that work on another core at the same time. :class:`TrackingAgent` is the job's
side: :meth:`~TrackingAgent.call` queues a call (``set_tags``, ``set_status``, ``sync_spool``,
``log_metrics``, ``log_artifact`` of :mod:`orchestration.tracking`, or the metrics logger's
``metrics_open`` / ``step`` / ``wake`` / ``metrics_close``) and returns at once; a writer thread
sends it, one JSON line, to the agent's stdin. The agent (``python -m
orchestration.tracking.agent TRIAL_DIR``) makes the calls in order, each one failing only with a
warning, as in-process calls do; metrics go through the usual :class:`MlflowMetricsCallback`
(batches, and the spool when the server is down).

Ending: :meth:`~TrackingAgent.close` sends ``close`` and waits for the agent to deliver what it
holds and exit. If the job dies instead, the agent reads what the job wrote, delivers it and
exits (end of its stdin, or its parent gone). It holds the trial's ``tracking_agent.lock`` while
it lives (the job takes it, then hands it over), so whoever records a killed job waits for it
first (:func:`wait_for_agent`) and is not overwritten by a call the job made before it died. It
ignores SIGTERM, SIGINT and SIGUSR2 (a cancel or a preemption is the job's to handle; it shares
the job's process group). If the agent cannot be started or dies, the job makes its calls
itself from then on (calls the agent had received but not made are lost; metrics it held are in
the spool only if it spooled them).
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mugs.callbacks import Callback
from orchestration import tracking
from orchestration.tracking.calls import CALLS, METRICS_CALLS, make_call

LOCK_NAME = "tracking_agent.lock"
CLOSE_TIMEOUT_S = 120.0  # the metrics logger's own close is bounded to 30 s, each call to 5 s


def lock_path(trial_dir: Path) -> Path:
    return Path(trial_dir) / LOCK_NAME


def _lock_within(fd: int, timeout_s: float) -> bool:
    """Take an exclusive flock on ``fd``, waiting up to ``timeout_s``; False if it stayed held."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def wait_for_agent(trial_dir: Path, timeout_s: float = 60.0) -> bool:
    """Wait until no tracking agent of the trial is alive (its lock is free); False on timeout."""
    path = lock_path(trial_dir)
    if not path.exists():
        return True
    with open(path, "a") as f:
        return _lock_within(f.fileno(), timeout_s)  # released when the file closes


def _take_lock(trial_dir: Path, timeout_s: float = 60.0) -> int:
    """Open and lock the trial's agent lock (waiting for an earlier attempt's agent to finish,
    within ``timeout_s``); the descriptor, to hand to the new agent."""
    fd = os.open(lock_path(trial_dir), os.O_RDWR | os.O_CREAT, 0o644)
    if not _lock_within(fd, timeout_s):
        print("warning: an earlier tracking agent of this trial is still delivering", file=sys.stderr)
    return fd


def _jsonable(value: Any) -> Any:
    """Numbers the trainer logs may be numpy or torch scalars; paths are sent as text."""
    if isinstance(value, Path):
        return str(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


class TrackingAgent:
    """The job's side of the agent: queue calls, a thread writes them, ``close`` waits."""

    def __init__(self, trial_dir: Path, direct: Callable[[str, tuple], None] = make_call) -> None:
        self.trial_dir = Path(trial_dir)
        self._direct = direct  # makes a call in this process (the fallback)
        self._queue: queue.SimpleQueue[tuple[str, tuple] | None] = queue.SimpleQueue()
        self._proc: subprocess.Popen | None = None
        self.sent = 0  # messages written to the agent
        lock = _take_lock(self.trial_dir)  # the agent inherits it: held until the agent ends
        try:
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "orchestration.tracking.agent", str(self.trial_dir), str(lock)],
                    stdin=subprocess.PIPE,
                    pass_fds=(lock,),
                )
            except OSError as e:
                print(f"warning: tracking agent not started ({e}); tracking from the job", file=sys.stderr)
            finally:
                os.close(lock)
            self._writer = threading.Thread(target=self._write_all, name="tracking-agent-writer", daemon=True)
            self._writer.start()
        except BaseException:  # e.g. a signal handler's error: an agent nobody writes to would
            self._release()  # hold the trial's lock until this process ends; it ends now
            raise

    def _release(self) -> None:
        """Close the agent's stdin: it makes what it was sent, then exits (and frees the lock)."""
        stdin = self._proc.stdin if self._proc is not None else None
        if stdin is not None:
            try:
                stdin.close()
            except OSError:
                pass

    def call(self, op: str, *args: Any) -> None:
        """Queue one call; it is made after every call queued before it."""
        if op not in CALLS + METRICS_CALLS:
            raise ValueError(f"not a tracking call: {op!r}")
        self._queue.put((op, args))

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Send ``close`` and wait for the agent to deliver and exit; False if it did not in time."""
        deadline = time.monotonic() + timeout_s
        self._queue.put(None)
        self._writer.join(timeout_s)
        if self._proc is None:
            return not self._writer.is_alive()
        try:
            self._proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(
                f"warning: the tracking agent (pid {self._proc.pid}) is still delivering after "
                f"{timeout_s:.0f} s; leaving it to finish",
                file=sys.stderr,
            )
            return False
        return True

    def _write_all(self) -> None:
        alive = self._proc is not None and self._proc.stdin is not None
        metrics_open: tuple | None = None  # the open metrics session's arguments
        while True:
            item = self._queue.get()
            if alive:
                alive = self._send(item)
                if alive:
                    if item is None:
                        return
                    if item[0] in ("metrics_open", "metrics_close"):
                        metrics_open = item[1] if item[0] == "metrics_open" else None
                    continue
                print("warning: the tracking agent is gone; tracking from the job", file=sys.stderr)
                if metrics_open is not None and item is not None and item[0] != "metrics_open":
                    self._direct("metrics_open", metrics_open)  # the session goes on here
            if item is None:
                return
            self._direct(*item)

    def _send(self, item: tuple[str, tuple] | None) -> bool:
        assert self._proc is not None and self._proc.stdin is not None
        msg = {"op": "close"} if item is None else {"op": item[0], "args": list(item[1])}
        try:
            self._proc.stdin.write((json.dumps(msg, default=_jsonable) + "\n").encode())
            self._proc.stdin.flush()
            self.sent += 1
            if item is None:
                self._proc.stdin.close()
        except (OSError, ValueError):
            return False
        return True


class AgentMetricsCallback(Callback):
    """The trainer's metrics to the agent's :class:`MlflowMetricsCallback` (same timestamps)."""

    def __init__(self, agent: TrackingAgent, tracking_uri: str, run_id: str, spool_path: Path) -> None:
        self.agent = agent
        agent.call("metrics_open", tracking_uri, run_id, str(spool_path))

    def on_step_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        if self.agent is not None:
            self.agent.call("step", time.time_ns() // 1_000_000, dict(metrics))

    def on_checkpoint(self, trainer: Any, path: Path) -> None:
        if self.agent is not None:
            self.agent.call("wake")

    def on_train_end(self, trainer: Any, status: str) -> None:
        self.close()

    def close(self) -> None:
        if self.agent is not None:
            self.agent.call("metrics_close")
            self.agent = None  # type: ignore[assignment]


# ------------------------------------------------------------------ the agent process
def _lines(parent: int):
    """The JSON messages on stdin until ``close``, its end, or the parent's death."""
    fd, pending = sys.stdin.fileno(), b""
    while True:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            if os.getppid() != parent:  # the job died; its writes are all read by now
                return
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            msg = json.loads(line)
            if msg.get("op") == "close":
                return
            yield msg


def serve() -> int:
    """The agent's main. Its lock (the descriptor the job handed over, ``argv[2]``) stays open,
    so held, until the process ends."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    parent = os.getppid()
    tracking.apply_fail_fast_env()
    importlib.import_module("orchestration.tracking.logger")  # MLflow now: the job's first
    # call comes only after its own import of torch
    try:
        for msg in _lines(parent):
            make_call(str(msg.get("op")), tuple(msg.get("args", ())))
    finally:
        make_call("metrics_close", ())  # what the logger holds: delivered, or spooled
        sys.stdout.flush()
        sys.stderr.flush()
    return 0


if __name__ == "__main__":
    from orchestration.process_exit import fast_exit

    fast_exit(serve())
