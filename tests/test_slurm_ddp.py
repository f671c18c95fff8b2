"""One pretraining job of 2 tasks (DDP, gloo on CPU) on the real SLURM cluster: it equals one
process on the same global batch, and survives a preemption with both ranks.

The job runs 2 tasks of 16 images per step (``--tasks-per-node 2 --cpus 1``); the reference is
``python -m mugs.train`` in one process with 32 images per step, the same global batch, so the
same images in the same order (:class:`mugs.data.sampler.ResumableSampler`), the same crops (each
image's views are seeded by its index) and the same lr schedule. BatchNorm heads are off: they
normalise per rank on CPU (SyncBatchNorm needs CUDA). Mid-run the job gets USR2 (what SLURM
sends before the time limit or on preemption): both ranks stop at the same step, rank 0
checkpoints and requeues the job, and both resume from that step.

Tolerance: the logged loss (every rank reports the global batch's, all-reduced) agrees with the
one-process loss to rel 1e-4, as in test_ddp. Measured: 3.3e-7 at most over 30 uninterrupted
steps; 1.3e-5 at most over 120 steps across a preemption at step 16 (Adam turns the ~1e-11
rounding noise of exactly-zero gradients into lr-sized steps, which the loss feels slowly). A
wrong global batch, lr or data order is off by far more (the loss falls by ~28 % here).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

from tests.orch_helpers import jobs, last_step, metric_steps, only_trial, orch, run_of, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.mlflow, pytest.mark.timeout(900)]

STEPS = 120
PER_RANK = 16
COMMON = [
    f"train.max_steps={STEPS}",
    "train.log_every=1",
    "model.use_bn_in_head=false",
    "data.subset=512",
]


def _sets(*items: str) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def _losses(metrics: Path) -> dict[int, float]:
    return {d["step"]: d["loss"] for d in map(json.loads, metrics.read_text().splitlines())}


def _one_process(out: Path) -> dict[int, float]:
    """The reference: one process, the whole global batch (2 x 16 images)."""
    cmd = [sys.executable, "-m", "mugs.train", "--preset", "demo", "--out", str(out)]
    cmd += _sets(*COMMON, f"train.batch_size={2 * PER_RANK}")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return _losses(out / "metrics.jsonl")


def _step_tasks(job_id: str) -> dict[str, str]:
    """Each step of the job -> its task count (sacct)."""
    out = subprocess.run(
        ["sacct", "-n", "-P", "-j", job_id, "-o", "JobID,NTasks,State"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    return {p[0]: p[1] for p in (line.split("|") for line in out.splitlines()) if len(p) >= 3}


def test_two_task_job_equals_one_process_and_survives_preemption(
    slurm_cluster, slurm_workdir, mlflow_server, services, tmp_path
):
    wd = slurm_workdir / "ddp"
    r = orch(
        "train", "--preset", "demo", *_sets(*COMMON, f"train.batch_size={PER_RANK}"),
        "--backend", "slurm", "--tasks-per-node", "2", "--cpus", "1", "--time", "10", "--evals", "",
        "--experiment", "slurm-ddp", workdir=wd, uri=mlflow_server,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    trial = only_trial(wd)
    job = jobs(trial)[0]["job_id"]

    wait_for(lambda: last_step(trial) >= 10, 300, "the 2-task job to reach step 10")
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=60)
    final = services.wait_sacct_final(job, timeout=600)
    assert final["State"] == "COMPLETED", final

    tasks = _step_tasks(job)
    assert tasks.get(f"{job}.0") == "2", f"the training step ran 2 tasks: {tasks}"
    starts = (trial / "pretrain_starts.log").read_text().splitlines()
    assert len(starts) == 2, starts
    resumed_at = int(starts[1].rsplit("from_step=", 1)[1])
    assert 10 <= resumed_at < STEPS, f"resumed from the preemption checkpoint: {starts}"
    state = torch.load(trial / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert (state["world_size"], state["step"]) == (2, STEPS)
    assert len(state["rng"]) == 2, "both ranks' random states are saved"

    ref = _one_process(tmp_path / "one-process")  # after the job: both would share 2 cores
    losses = _losses(trial / "metrics.jsonl")
    assert sorted(losses) == list(range(1, STEPS + 1)), "every step logged once, across the requeue"
    bad = {s: (losses[s], ref[s]) for s in ref if losses[s] != pytest.approx(ref[s], rel=1e-4)}
    assert not bad, f"2 tasks x {PER_RANK} vs one process x {2 * PER_RANK} differ at steps {bad}"
    assert losses[STEPS] < 0.8 * losses[1], "the comparison is over a run that learns"

    run = run_of(trial, mlflow_server)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mugs.requeue_count"] == "1"
    steps = metric_steps(mlflow_server, run.info.run_id, "train/loss")
    assert sorted(steps) == list(range(1, STEPS + 1)), "one MLflow run, logged by rank 0 only"
    exp = mlflow.MlflowClient(mlflow_server).get_experiment_by_name("slurm-ddp")
    runs = mlflow.MlflowClient(mlflow_server).search_runs([exp.experiment_id])
    assert [x.info.run_id for x in runs] == [run.info.run_id], "one run for the 2-task job"
