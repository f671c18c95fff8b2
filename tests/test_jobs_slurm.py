"""Job chains on the real single-node SLURM cluster, tracked in a real MLflow server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import mlflow
import pytest

from tests.orch_helpers import job_logs, jobs, last_step, metric_steps, only_trial, orch, run_of, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.mlflow, pytest.mark.timeout(900)]

SMALL = [
    "--backend",
    "slurm",
    "--cpus",
    "1",
    "--time",
    "10",
    "--set",
    "data.subset=512",
    "--set",
    "train.batch_size=32",
]


def _sacct(services, job_id: str) -> dict:
    return services.wait_sacct_final(job_id, timeout=300)


def test_pretrain_then_knn_chain(slurm_cluster, slurm_workdir, mlflow_server, services):
    wd = slurm_workdir / "runs"
    r = orch(
        "train",
        "--preset",
        "demo",
        "--set",
        "train.max_steps=30",
        *SMALL,
        "--wait",
        workdir=wd,
        uri=mlflow_server,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    trial = only_trial(wd)
    js = jobs(trial)
    assert [j["kind"] for j in js] == ["pretrain", "eval"]
    pre, knn = (_sacct(services, j["job_id"]) for j in js)
    assert pre["State"] == "COMPLETED" and knn["State"] == "COMPLETED"
    assert knn["Start"] >= pre["End"], "evaluation started only after pretraining ended"
    pickles = list((trial / "slurm").rglob("*.pkl"))
    assert pickles and (trial / "slurm").stat().st_mode & 0o077 == 0, "submitit's pickles: owner only"
    assert trial.joinpath("trial.yaml").stat().st_mode & 0o077 == 0, "trial.yaml holds the tracking URI"

    run = run_of(trial, mlflow_server)
    assert run.info.status == "FINISHED"
    assert 0 <= run.data.metrics["eval/knn_top1"] <= 100
    assert run.data.tags["slurm.pretrain_job_id"] == js[0]["job_id"]
    assert run.data.tags["slurm.knn_job_id"] == js[1]["job_id"]
    assert run.data.params["train.max_steps"] == "30"
    steps = metric_steps(mlflow_server, run.info.run_id, "train/loss")
    assert max(steps) == 30
    # the job ran the code snapshot taken at submit time, not the working tree
    snapshot = Path((trial / "snapshot").read_text())
    assert snapshot.parent == (wd / "snapshots").resolve()
    assert run.data.tags["mugs.code_dir"] == str(snapshot)


def test_preempted_job_requeues_and_resumes_exactly(slurm_cluster, slurm_workdir, mlflow_server, services):
    """USR2 mid-training: checkpoint, requeue, resume; same final step and losses as an uninterrupted job."""
    common = [
        "--preset",
        "demo",
        "--set",
        "train.max_steps=40",
        "--set",
        "train.log_every=1",
        "--evals",
        "",
        *SMALL,
    ]
    wa, wb = slurm_workdir / "a", slurm_workdir / "b"
    assert orch("train", *common, workdir=wa, uri=mlflow_server).returncode == 0
    assert orch("train", *common, workdir=wb, uri=mlflow_server).returncode == 0
    ta, tb = only_trial(wa), only_trial(wb)
    job_b = jobs(tb)[0]["job_id"]
    wait_for(lambda: last_step(tb) >= 8, 300, "job b to reach step 8")
    subprocess.run(["scancel", "--signal=USR2", job_b], check=True, timeout=60)
    wait_for(lambda: (tb / "checkpoint.pth").exists() and last_step(tb) < 40, 120, "b's checkpoint")
    ra, rb = _sacct(services, jobs(ta)[0]["job_id"]), _sacct(services, job_b)
    assert ra["State"] == "COMPLETED" and rb["State"] == "COMPLETED", (ra, rb)

    la = {d["step"]: d["loss"] for d in map(json.loads, (ta / "metrics.jsonl").read_text().splitlines())}
    lb = {d["step"]: d["loss"] for d in map(json.loads, (tb / "metrics.jsonl").read_text().splitlines())}
    assert sorted(la) == sorted(lb) == list(range(1, 41))
    assert lb == la, "the resumed run's losses equal the uninterrupted run's at every step"

    run = run_of(tb, mlflow_server)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mugs.requeue_count"] == "1"
    steps = metric_steps(mlflow_server, run.info.run_id, "train/loss")
    assert sorted(steps) == list(range(1, 41)), "one MLflow run, continuous steps"
    assert steps[40] == pytest.approx(la[40])


def test_timeouts_requeue_until_the_bound(slurm_cluster, slurm_workdir, mlflow_server, services):
    """A 1-minute limit with USR2 45 s before it: requeued once, then stopped by --max-requeues 1.

    A USR2 during the job's start-up is handled by submitit's own handler, through our
    ``checkpoint()``, within the same bound. The lead is 45 s, not 30: slurmctld looks at time
    limits about every 30 s, so a 30-s lead on a 60-s job can fall between two looks and never be
    sent (seen: the requeued attempt ran to TIMEOUT with no USR2, slurmctld.log "Time limit
    exhausted"); a lead longer than that period always meets a look.
    """
    wd = slurm_workdir / "runs"
    r = orch(
        "train",
        "--preset",
        "demo",
        "--set",
        "train.epochs=1000",
        "--evals",
        "knn",
        "--backend",
        "slurm",
        "--cpus",
        "1",
        "--time",
        "1",
        "--signal-delay",
        "45",
        "--max-requeues",
        "1",
        "--set",
        "data.subset=512",
        "--set",
        "train.batch_size=32",
        workdir=wd,
        uri=mlflow_server,
    )
    assert r.returncode == 0, r.stderr
    trial = only_trial(wd)
    js = jobs(trial)
    pre = services.wait_sacct_final(js[0]["job_id"], timeout=600)
    knn = services.wait_sacct_final(js[1]["job_id"], timeout=120)
    assert pre["State"] == "FAILED", pre
    assert knn["State"] == "CANCELLED", knn
    run = run_of(trial, mlflow_server)
    assert run.info.status == "FAILED", job_logs(trial)
    assert run.data.tags["mugs.requeue_count"] == "1", job_logs(trial)
    assert "requeue limit" in run.data.tags["mugs.failure_reason"]


def test_crash_fails_run_and_cancels_eval(slurm_cluster, slurm_workdir, mlflow_server, services):
    wd = slurm_workdir / "runs"
    r = orch(
        "train",
        "--preset",
        "demo",
        "--set",
        "train.lr=1e30",  # finite (validation refuses .inf), and the loss is not after one step
        "--set",
        "train.max_steps=30",
        *SMALL,
        "--experiment",
        "crash",
        "--wait",
        workdir=wd,
        uri=mlflow_server,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    trial = only_trial(wd)
    js = jobs(trial)
    assert services.wait_sacct_final(js[0]["job_id"])["State"] == "FAILED"
    assert services.wait_sacct_final(js[1]["job_id"])["State"] == "CANCELLED"
    run = run_of(trial, mlflow_server)
    assert run.info.status == "FAILED"
    assert "non-finite loss" in run.data.tags["mugs.failure_reason"]
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("crash")
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")


def test_job_killed_outside_the_task_ends_its_run_with_the_reason(
    slurm_cluster, slurm_workdir, mlflow_server, services
):
    """The training process of a pretraining job SIGKILLed (what the OOM killer does; scancel
    --signal=KILL would reach it as a catchable SIGTERM through srun) writes nothing itself:
    `mugs-orch status` ends its run with the state sacct reports as the reason, and the eval
    that depended on it is cancelled. No run stays RUNNING."""
    wd = slurm_workdir / "runs"
    r = orch("train", "--preset", "demo", "--set", "train.epochs=1000", "--evals", "knn", *SMALL,
             "--experiment", "killed", workdir=wd, uri=mlflow_server)  # fmt: skip
    assert r.returncode == 0, r.stderr
    trial = only_trial(wd)
    wait_for(lambda: last_step(trial) >= 5, 300, "training to start")
    pre, knn = (j["job_id"] for j in jobs(trial))
    pid = int((trial / "pretrain_starts.log").read_text().split("pid=")[1].split()[0])
    os.kill(pid, signal.SIGKILL)  # the single-node cluster runs the task on this host
    final = _sacct(services, pre)
    assert _sacct(services, knn)["State"] == "CANCELLED"
    st = orch("status", workdir=wd, uri=mlflow_server)
    assert st.returncode == 0, st.stderr
    run = run_of(trial, mlflow_server)
    assert run.info.status in ("FAILED", "KILLED"), run.info.status
    assert f"pretrain {final['State'].split()[0]}" in run.data.tags["mugs.failure_reason"]
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("killed")
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")


def test_a_job_slurm_would_refuse_is_refused_before_anything_exists(
    slurm_cluster, slurm_workdir, mlflow_server
):
    """`sbatch --test-only` runs first: a partition the cluster does not have exits 2 with
    slurmctld's answer, and neither a trial directory, a snapshot nor a run is created."""
    wd = slurm_workdir / "refused"
    wd.mkdir()
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    runs_before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    for cmd in (
        ["train", "--preset", "demo"],
        ["sweep", str(Path(__file__).parents[1] / "sweeps" / "queue_sizes.yaml")],
    ):
        r = orch(*cmd, "--backend", "slurm", "--partition", "nosuchpartition", workdir=wd, uri=mlflow_server)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "slurmctld refuses the job" in r.stderr and "nosuchpartition" in r.stderr, r.stderr
    assert list(wd.iterdir()) == []
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == runs_before
