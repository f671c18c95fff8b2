"""A preemption past the requeue bound at random moments of a pretraining job's start-up.

    .venv/bin/python benchmarks/startup_preemption.py [--runs 16] [--max-delay 1.6] [--out PATH]

Each run starts a real pretraining job process (the demo preset, a sqlite MLflow store, one
thread, ``SLURM_RESTART_COUNT`` = its ``max_requeues`` of 1) whose SIGUSR2 handler does what
submitit's does: call the task's ``checkpoint()`` and raise submitit's ``UncompletedJobError``
when it returns None. The signal comes a uniformly drawn delay after the task is called (half
of the runs below 0.15 s, where torch's import is, which swallows exceptions around its CUDA
preload). A run is good when the job ends within the timeout, its run is FAILED with the
requeue-limit reason and no training started after a start-up refusal. Prints one line per run
and writes the counts and every run as JSON (default ``results/startup_preemption.json``).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mugs.atomic import atomic_write_text  # noqa: E402
from mugs.presets import PRESETS  # noqa: E402
from orchestration.tracking import client_for, create_run, get_or_create_experiment  # noqa: E402
from orchestration.trial import TrialSpec  # noqa: E402

JOB = textwrap.dedent(
    """
    import os, signal, sys
    from submitit.core.utils import UncompletedJobError
    from orchestration.jobs.pretrain import PretrainTask
    from orchestration.trial import TrialSpec
    task = PretrainTask(TrialSpec.load(sys.argv[1]))
    def handler(signum, frame):
        if task.checkpoint() is None:
            raise UncompletedJobError("Job not requeued because: checkpoint function returned None.")
    signal.signal(signal.SIGUSR2, handler)
    signal.signal(signal.SIGALRM, lambda s, f: os.kill(os.getpid(), signal.SIGUSR2))
    signal.setitimer(signal.ITIMER_REAL, float(sys.argv[2]))
    task()
    """
)


def one_run(root: Path, uri: str, experiment: str, delay: float, timeout_s: float) -> dict:
    run_id = create_run(uri, experiment, "startup-preemption", {}, {})
    trial = Path(tempfile.mkdtemp(dir=root))
    cfg = copy.deepcopy(PRESETS["demo"])
    cfg.setdefault("train", {})["epochs"] = 1000  # a job that trains on would not end by itself
    spec = TrialSpec("t", str(trial), cfg, tracking_uri=uri, run_id=run_id, max_requeues=1, backend="slurm")
    spec.save()
    env = {**os.environ, "PYTHONPATH": str(REPO), "SLURM_RESTART_COUNT": "1", "MUGS_NUM_THREADS": "1"}
    log = (trial / "job.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", JOB, str(trial), str(delay)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    t0 = time.monotonic()
    try:
        proc.wait(timeout_s)
        ended = True
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        ended = False
    run = client_for(uri).get_run(run_id)
    reason = spec.paths.failed.read_text().strip() if spec.paths.failed.exists() else ""
    in_start_up = "during start-up" in reason
    trained = spec.paths.starts.exists()
    good = ended and run.info.status == "FAILED" and "requeue limit" in reason
    good = good and not (in_start_up and trained)
    out = {"delay_s": round(delay, 3), "job_s": round(time.monotonic() - t0, 1), "ended": ended, "status": run.info.status, "refused_in_start_up": in_start_up,
           "training_started": trained, "good": good}  # fmt: skip
    if not good:  # what the job printed, to see why
        out["log_tail"] = (trial / "job.log").read_text(errors="replace")[-3000:]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=16)
    p.add_argument("--min-delay", type=float, default=0.15)
    p.add_argument("--max-delay", type=float, default=1.6, help="seconds; half of the runs draw below 0.15")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a job may take to end")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "startup_preemption.json")
    a = p.parse_args(argv)
    rng = random.Random(a.seed)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        experiment = get_or_create_experiment(uri, "startup-preemption")
        for i in range(a.runs):
            delay = rng.uniform(0.0, 0.15) if i % 2 == 0 else rng.uniform(a.min_delay, a.max_delay)
            r = one_run(Path(tmp), uri, experiment, delay, a.timeout)
            runs.append(r)
            print(json.dumps(r), flush=True)
    good = sum(r["good"] for r in runs)
    result = {
        "benchmark": "startup_preemption",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "good": good,
        "runs": runs,
    }
    atomic_write_text(a.out, json.dumps(result, indent=2) + "\n")
    print(f"{good}/{len(runs)} runs ended FAILED with the reason, no training after a start-up refusal")
    return 0 if good == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
