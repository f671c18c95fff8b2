"""Local backend: a detached runner process executes the chain on this machine.

The runner runs each job of the chain in a child process (``python -m orchestration.jobs.run``),
one after another, so that a job killed by a signal (SIGKILL, the OOM killer) is recorded: its
state, a FAILED marker and the run's status with the reason. It reruns a pretraining job that
exited "requeued" (up to the trial's bound), skips evaluations when pretraining failed, and
records states in the trial's jobs.json.

``runner.pid`` identifies the runner (:mod:`orchestration.backends.liveness`: pid, host, boot
id, start time), written by the launcher before it returns and removed by the runner on exit;
a runner is alive only if that very process still runs, so a reused pid after a reboot is
neither waited on nor signalled. A runner on another host (a Ray worker node) is alive while it
refreshes ``runner.heartbeat``, and is stopped through the ``CANCEL_REQUESTED`` file the
pretraining task watches. Starting a runner is a claim under ``runner.lock``: two drivers
never start two runners for one trial.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mugs.errors import EXIT_REQUEUED
from orchestration import tags
from orchestration.backends.base import TERMINAL, JobState
from orchestration.backends.liveness import ProcessRecord, read_record, remove_if_mine, write_record
from orchestration.trial import TrialPaths, TrialSpec, chain_records, read_jobs, update_job, write_jobs

HEARTBEAT_S = 10.0


class LocalBackend:
    name = "local"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads  # torch/OpenMP threads of the trial (None: all cores)

    def submit(self, spec: TrialSpec, wait: bool = False) -> list[JobState]:
        proc = self.start(spec)
        if wait:
            proc.wait()
        return read_jobs(spec.dir)

    def start(self, spec: TrialSpec) -> subprocess.Popen:
        """Claim the trial and start its runner (RunnerBusy if one is alive); the runner's process."""
        jobs = chain_records(spec, "local-pretrain", {p: f"local-{p}" for p in spec.evals})
        paths = spec.paths
        with claim(paths) as free:
            if not free:
                raise RunnerBusy(
                    f"{spec.trial_id}: a runner of this trial is alive (pid file {paths.runner_pid})"
                )
            write_jobs(spec.dir, jobs)
            return self._launch(paths)

    def _launch(self, paths: TrialPaths) -> subprocess.Popen:
        paths.logs.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.threads:
            env.update(OMP_NUM_THREADS=str(self.threads), MUGS_NUM_THREADS=str(self.threads))
        with open(paths.logs / "runner.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "orchestration.backends.local", str(paths.dir)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        rec = ProcessRecord.of(proc.pid)
        if rec is not None:  # None only if it already exited (it is not reaped before our wait)
            write_record(paths.runner_pid, rec)
        return proc

    def states(self, spec: TrialSpec) -> list[JobState]:
        jobs = read_jobs(spec.dir)
        if not runner_alive(spec.dir):
            for j in jobs:  # runner died without recording an end (killed -9, machine reboot)
                if j["state"] not in TERMINAL:
                    j["state"] = "FAILED" if j["state"] == "RUNNING" else "CANCELLED"
                    j["exit_code"] = j.get("exit_code") or "runner gone"
        return jobs

    def cancel(self, spec: TrialSpec) -> None:
        """Ask the trial to stop (the file works from any host); signal the runner's process group
        only when the pid file provably names the live runner on this host."""
        spec.paths.cancel_request.write_text(f"{time.time():.3f}\n")
        rec, _ = read_record(spec.paths.runner_pid)
        if rec is not None and rec.alive_here():
            try:
                os.killpg(rec.pid, signal.SIGTERM)  # same host: stop now rather than at the next log step
            except (ProcessLookupError, PermissionError):
                pass  # it ended meanwhile, or it is not ours to signal: the file still stops it


class RunnerBusy(RuntimeError):
    """A live runner already holds the trial."""


@contextmanager
def claim(paths: TrialPaths) -> Iterator[bool]:
    """Hold the trial's ``runner.lock`` while deciding to start a runner; yields whether none is alive."""
    paths.dir.mkdir(parents=True, exist_ok=True)
    with open(paths.dir / "runner.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield not runner_alive(paths.dir)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def runner_alive(trial_dir: Path) -> bool:
    """Whether the trial's runner still runs: the recorded process itself on this host; on another
    host, while its heartbeat is fresh. A record that proves nothing counts as gone."""
    paths = TrialPaths(Path(trial_dir))
    rec, host = read_record(paths.runner_pid)
    if host is None:
        return False
    if host != socket.gethostname():
        try:
            age = time.time() - paths.heartbeat.stat().st_mtime
        except OSError:
            return False
        return age < 6 * HEARTBEAT_S
    return rec is not None and rec.alive_here()


def _heartbeat(paths: TrialPaths) -> None:
    """Touch the heartbeat file while the runner lives (a daemon thread)."""

    def beat() -> None:
        while True:
            paths.heartbeat.touch()
            time.sleep(HEARTBEAT_S)

    threading.Thread(target=beat, name="runner-heartbeat", daemon=True).start()


class _Runner:
    """The chain of one trial, run by a child process of this one (``orchestration.jobs.run chain``:
    pretraining and evaluations in one process; same process group, so a cancel's SIGTERM reaches
    both). The runner reruns the child when pretraining asks to be requeued (within the bound)
    and records how a job ended when the child could not: a failure, a cancel, a signal."""

    def __init__(self, trial_dir: Path) -> None:
        self.paths = TrialPaths(trial_dir)
        self.spec = TrialSpec.load(trial_dir)
        self.cancelled = False

    def on_term(self, signum: int, _frame: object) -> None:
        self.cancelled = True  # the child got the same signal (process group); wait for it

    def run_child(self, attempt: int) -> int:
        """The child's exit code; minus the signal number if a signal ended it."""
        env = {**os.environ, "MUGS_REQUEUE_COUNT": str(attempt), "MUGS_RUNNER_PID": str(os.getpid())}
        cmd = [sys.executable, "-m", "orchestration.jobs.run", "chain", str(self.paths.dir)]
        child = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
        return child.wait()  # a SIGTERM meanwhile only sets the flag; the wait goes on

    def unfinished(self) -> int | None:
        """Index of the first job not COMPLETED (the one the child was running), or None."""
        return next((i for i, j in enumerate(read_jobs(self.paths.dir)) if j["state"] != "COMPLETED"), None)

    def record_end(self, i: int, rc: int) -> None:
        """Record how job ``i`` ended (the child died in it, or it failed)."""
        job = read_jobs(self.paths.dir)[i]
        state = "CANCELLED" if self.cancelled else "FAILED"
        code = f"{rc}:0" if rc >= 0 else f"0:{-rc}"  # sacct's exit:signal
        update_job(self.paths.dir, i, state=state, exit_code=code, end=str(time.time()))
        if rc < 0 and not self.cancelled:
            record_killed_job(self.spec, job, -rc)

    def cancel_rest(self, failed: bool) -> None:
        for i, j in enumerate(read_jobs(self.paths.dir)):
            if j["state"] not in TERMINAL:
                why = "dependency never satisfied" if failed else "cancelled"
                update_job(self.paths.dir, i, state="CANCELLED", exit_code=why)

    def __call__(self) -> int:
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # preemption is the job's to handle
        _heartbeat(self.paths)
        attempt, failed = 0, False
        while not (self.cancelled or self.paths.cancel_request.exists()):
            rc = self.run_child(attempt)
            self.cancelled = (
                self.cancelled or self.paths.cancelled.exists() or self.paths.cancel_request.exists()
            )
            i = self.unfinished()
            if i is None:
                break
            pretraining = read_jobs(self.paths.dir)[i]["kind"] == "pretrain"
            if (
                rc == EXIT_REQUEUED
                and pretraining
                and not self.cancelled
                and attempt < self.spec.max_requeues
            ):
                attempt += 1
                update_job(self.paths.dir, i, state="REQUEUED")
                continue
            self.record_end(i, rc if rc != 0 else 1)
            failed = not self.cancelled
            break
        self.cancel_rest(failed)
        return 0


def record_killed_job(spec: TrialSpec, job: JobState, signum: int) -> None:
    """A job ended by a signal wrote nothing: the FAILED marker and the run's status say why."""
    from orchestration import tracking
    from orchestration.jobs.tracking_calls import safe
    from orchestration.tracking.agent import wait_for_agent

    name = signal.Signals(signum).name if signum in signal.valid_signals() else str(signum)
    what = job["kind"] if job["kind"] == "pretrain" else f"eval:{job['protocol']}"
    reason = f"{what} killed by {name}" + (" (kill -9 or the out-of-memory killer)" if signum == 9 else "")
    spec.paths.failed.write_text(reason + "\n")
    if spec.run_id:
        if not wait_for_agent(spec.dir):  # what the job queued before it died lands first
            print("warning: the trial's tracking agent is still delivering; recording anyway", file=sys.stderr)
        safe(tracking.set_tags, spec.tracking_uri, spec.run_id, {tags.FAILURE_REASON: reason})
        safe(tracking.set_status, spec.tracking_uri, spec.run_id, "FAILED")


def run_chain(trial_dir: Path) -> int:
    """The runner: pretrain (rerun while it asks to be requeued, within the bound), then evals;
    its pid file is removed when it ends."""
    try:
        return _Runner(trial_dir)()
    finally:
        remove_if_mine(TrialPaths(trial_dir).runner_pid)


if __name__ == "__main__":
    sys.exit(run_chain(Path(sys.argv[1])))
