"""``python -m orchestration.jobs.run pretrain|eval|chain TRIAL_DIR [--protocol P]``: run one job
of a trial in this process, or (``chain``, what the local runner starts as its child) every job
not yet completed."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from orchestration.jobs.evaluate import EvalTask
from orchestration.jobs.pretrain import PretrainTask
from orchestration.jobs.tracking_calls import tracking_agent
from orchestration.process_exit import fast_exit
from orchestration.trial import EVAL_PROTOCOLS, TrialSpec, read_jobs, update_job


def die_with_runner() -> None:
    """Under the local runner (``MUGS_RUNNER_PID``): be killed when the runner dies, so that a
    runner killed by SIGKILL never leaves a trainer behind that a new runner would duplicate.
    Linux only (prctl PR_SET_PDEATHSIG); elsewhere a no-op."""
    runner = os.environ.get("MUGS_RUNNER_PID", "")
    if not runner.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    if os.getppid() != int(runner):  # the runner died before prctl took effect
        os._exit(1)


def run_remaining_jobs(spec: TrialSpec) -> int:
    """The local runner's child: every job of jobs.json not yet COMPLETED, in order, in this one
    process (one start-up for pretraining and its evaluations). Each is marked RUNNING before and
    COMPLETED after; a job that fails or asks to be requeued ends the process with its exit
    code and stays RUNNING in jobs.json, for the runner to record."""
    import signal
    import time

    for i, job in enumerate(read_jobs(spec.dir)):
        if job["state"] == "COMPLETED":
            continue
        if spec.paths.cancel_request.exists():
            return 1
        update_job(
            spec.dir,
            i,
            state="RUNNING",
            start=str(time.time()),
            attempt=os.environ.get("MUGS_REQUEUE_COUNT", "0"),
        )
        if job["kind"] == "pretrain":
            PretrainTask(spec)()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the trainer's handler: a cancel now ends us
        else:
            EvalTask(spec, job["protocol"])()
        update_job(spec.dir, i, state="COMPLETED", exit_code="0:0", end=str(time.time()))
    return 0


def _set_threads() -> None:
    threads = os.environ.get("MUGS_NUM_THREADS", "")
    if threads.isdigit():  # the local runner's share of the cores
        import torch

        torch.set_num_threads(int(threads))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m orchestration.jobs.run")
    p.add_argument("kind", choices=("pretrain", "eval", "chain"))
    p.add_argument("trial_dir")
    p.add_argument("--protocol", choices=EVAL_PROTOCOLS)
    a = p.parse_args(argv)
    die_with_runner()
    spec = TrialSpec.load(a.trial_dir)
    if a.kind == "chain":
        with tracking_agent(spec):  # one agent for every job of the chain
            _set_threads()
            rc = run_remaining_jobs(spec)
        fast_exit(rc)  # its jobs are done: skip the interpreter's teardown
    _set_threads()
    if a.kind == "pretrain":
        PretrainTask(spec)()
    else:
        if not a.protocol:
            p.error("eval needs --protocol")
        EvalTask(spec, a.protocol)()
    return 0


if __name__ == "__main__":
    sys.exit(main())
