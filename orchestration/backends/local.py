"""Local backend: a detached runner process executes the chain on this machine.

The runner runs the jobs one after another in its own process, reruns a pretraining job that exited "requeued"
(up to the trial's bound), skips evaluations when pretraining failed, and records states in the
trial's jobs.json. ``runner.pid`` holds its pid and host; a runner on another host (a Ray
worker node) is alive while it refreshes ``runner.heartbeat``, and is stopped through the
``CANCEL_REQUESTED`` file the pretraining task watches (a pid from another host is never
signalled).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from orchestration.backends.base import TERMINAL, JobState
from orchestration.jobs.requeue import EXIT_REQUEUED
from orchestration.trial import CANCEL_FILE, TrialSpec, read_jobs, write_jobs

PID_FILE = "runner.pid"
HEARTBEAT_FILE = "runner.heartbeat"
HEARTBEAT_S = 10.0


class LocalBackend:
    name = "local"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads  # torch/OpenMP threads of the trial (None: all cores)

    def submit(self, spec: TrialSpec, wait: bool = False) -> list[JobState]:
        jobs: list[JobState] = [
            {
                "kind": "pretrain",
                "protocol": None,
                "job_id": "local-pretrain",
                "state": "PENDING",
                "exit_code": "",
            }
        ]
        jobs += [
            {"kind": "eval", "protocol": p, "job_id": f"local-{p}", "state": "PENDING", "exit_code": ""}
            for p in spec.evals
        ]
        write_jobs(spec.dir, jobs)
        logs = spec.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.threads:
            env.update(OMP_NUM_THREADS=str(self.threads), MUGS_NUM_THREADS=str(self.threads))
        with open(logs / "runner.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "orchestration.backends.local", str(spec.dir)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        (spec.dir / PID_FILE).write_text(f"{proc.pid} {socket.gethostname()}\n")
        if wait:
            proc.wait()
        return read_jobs(spec.dir)

    def states(self, spec: TrialSpec) -> list[JobState]:
        jobs = read_jobs(spec.dir)
        if not _runner_alive(spec.dir):
            for j in jobs:  # runner died without recording an end (killed -9, machine reboot)
                if j["state"] not in TERMINAL:
                    j["state"] = "FAILED" if j["state"] == "RUNNING" else "CANCELLED"
                    j["exit_code"] = j.get("exit_code") or "runner gone"
        return jobs

    def cancel(self, spec: TrialSpec) -> None:
        (spec.dir / CANCEL_FILE).write_text(f"{time.time():.3f}\n")
        pid = _local_pid(spec.dir)
        if pid is not None and _runner_alive(spec.dir):
            os.killpg(pid, signal.SIGTERM)  # same host: stop now rather than at the next log step


def _read_pid(trial_dir: Path) -> tuple[int, str | None] | None:
    try:
        parts = (Path(trial_dir) / PID_FILE).read_text().split()
        return int(parts[0]), (parts[1] if len(parts) > 1 else None)
    except (OSError, ValueError, IndexError):
        return None


def _local_pid(trial_dir: Path) -> int | None:
    """The runner's pid if it runs on this host (None for another host: never signal it)."""
    rec = _read_pid(trial_dir)
    return None if rec is None or not _on_this_host(rec) else rec[0]


def _on_this_host(rec: tuple[int, str | None]) -> bool:
    return rec[1] is None or rec[1] == socket.gethostname()


def _runner_alive(trial_dir: Path) -> bool:
    rec = _read_pid(trial_dir)
    if rec is None:
        return False
    pid = rec[0]
    if not _on_this_host(rec):  # another host: alive while the heartbeat is fresh
        try:
            age = time.time() - (Path(trial_dir) / HEARTBEAT_FILE).stat().st_mtime
        except OSError:
            return False
        return age < 6 * HEARTBEAT_S
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of a still-running parent counts as gone
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _heartbeat(trial_dir: Path) -> None:
    """Touch the heartbeat file while the runner lives (a daemon thread)."""
    path = trial_dir / HEARTBEAT_FILE

    def beat() -> None:
        while True:
            path.touch()
            time.sleep(HEARTBEAT_S)

    threading.Thread(target=beat, name="runner-heartbeat", daemon=True).start()


def _set(trial_dir: Path, idx: int, **kw: str) -> None:
    jobs = read_jobs(trial_dir)
    jobs[idx].update(kw)
    write_jobs(trial_dir, jobs)


def _run_job(spec: TrialSpec, job: JobState) -> int:
    """Run one job in this process; its exit code (SystemExit codes pass through)."""
    from orchestration.jobs import EvalTask, PretrainTask

    try:
        if job["kind"] == "pretrain":
            PretrainTask(spec)()
        else:
            EvalTask(spec, job["protocol"])()
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    except Exception:
        import traceback

        traceback.print_exc()
        return 1


def run_chain(trial_dir: Path) -> int:
    """The runner: pretrain (rerun while it asks to be requeued, within the bound), then evals.

    Jobs run in this process, one after another (the tasks install their own SIGTERM/SIGUSR2
    handlers while training); a SIGTERM before or between jobs cancels what is left.
    """
    spec = TrialSpec.load(trial_dir)
    jobs = read_jobs(trial_dir)
    cancelled = False
    if os.environ.get("MUGS_NUM_THREADS", "").isdigit():
        import torch

        torch.set_num_threads(int(os.environ["MUGS_NUM_THREADS"]))

    def on_term(signum: int, _frame: object) -> None:
        nonlocal cancelled
        cancelled = True
        raise SystemExit(1)

    signal.signal(signal.SIGTERM, on_term)
    _heartbeat(trial_dir)
    failed = False
    for i, job in enumerate(jobs):
        cancelled = cancelled or (trial_dir / CANCEL_FILE).exists()
        if failed or cancelled:
            _set(
                trial_dir,
                i,
                state="CANCELLED",
                exit_code="dependency never satisfied" if failed else "cancelled",
            )
            continue
        attempt = 0
        while True:
            os.environ["MUGS_REQUEUE_COUNT"] = str(attempt)
            _set(trial_dir, i, state="RUNNING", start=str(time.time()), attempt=str(attempt))
            try:
                rc = _run_job(spec, job)
            except SystemExit:  # SIGTERM outside training
                rc = 1
            signal.signal(signal.SIGTERM, on_term)  # the task replaced it while training
            if _killed(trial_dir):
                cancelled = True
            if rc == EXIT_REQUEUED and not cancelled and attempt < spec.max_requeues:
                attempt += 1
                _set(trial_dir, i, state="REQUEUED")
                continue
            break
        if rc == 0:
            _set(trial_dir, i, state="COMPLETED", exit_code="0:0", end=str(time.time()))
        else:
            state = "CANCELLED" if cancelled else "FAILED"
            _set(trial_dir, i, state=state, exit_code=f"{rc}:0", end=str(time.time()))
            failed = True
    return 0


def _killed(trial_dir: Path) -> bool:
    """The pretraining task records a cancellation in the trial directory."""
    return (trial_dir / "CANCELLED").exists()


if __name__ == "__main__":
    sys.exit(run_chain(Path(sys.argv[1])))
