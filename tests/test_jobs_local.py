"""The pretrain -> eval chain on the local backend, with a real MLflow server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.orch_helpers import jobs, last_step, metric_steps, only_trial, orch, run_of, wait_for

pytestmark = [pytest.mark.mlflow, pytest.mark.timeout(900)]

SMALL = ["--set", "data.subset=512", "--set", "train.batch_size=32"]


def test_local_chain(tmp_path, mlflow_server):
    wd = tmp_path / "runs"
    r = orch(
        "train",
        "--preset",
        "demo",
        "--set",
        "train.max_steps=12",
        *SMALL,
        "--wait",
        workdir=wd,
        uri=mlflow_server,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    trial = only_trial(wd)
    assert [(j["kind"], j["state"]) for j in jobs(trial)] == [
        ("pretrain", "COMPLETED"),
        ("eval", "COMPLETED"),
    ]
    run = run_of(trial, mlflow_server)
    assert run.info.status == "FINISHED"
    assert "eval/knn_top1" in run.data.metrics
    assert sorted(metric_steps(mlflow_server, run.info.run_id, "train/loss")) == [
        5,
        10,
        12,
    ]  # log_every 5 + last
    st = orch("status", workdir=wd, uri=mlflow_server)
    assert st.returncode == 0 and "COMPLETED" in st.stdout and "FINISHED" in st.stdout


def test_local_cancel_ends_run_killed(tmp_path, mlflow_server):
    wd = tmp_path / "runs"
    r = orch("train", "--preset", "demo", "--set", "train.epochs=100", *SMALL, workdir=wd, uri=mlflow_server)
    assert r.returncode == 0, r.stderr
    trial = only_trial(wd)
    wait_for(lambda: last_step(trial) >= 10, 300, "training to start")
    assert orch("cancel", trial.name, workdir=wd, uri=mlflow_server).returncode == 0
    wait_for(lambda: all(j["state"] == "CANCELLED" for j in jobs(trial)), 120, "jobs cancelled")
    assert run_of(trial, mlflow_server).info.status == "KILLED"


def _start_server(root: Path, port: int) -> subprocess.Popen:
    from tests.conftest import _mlflow_server_command  # the fixture's command line

    cmd = _mlflow_server_command(Path(sys.executable).parent / "mlflow", root, port)
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def test_runner_on_another_host_is_stopped_by_file_never_by_pid(tmp_path, mlflow_server):
    """A driver on another host (Ray worker nodes) cannot signal the runner: the trial directory's
    CANCEL_REQUESTED file alone stops training and cancels the evaluation; a pid recorded for
    another host is never signalled and counts as alive only while its heartbeat is fresh."""
    import signal
    import socket
    import time

    from orchestration.backends.local import HEARTBEAT_S, LocalBackend, runner_alive
    from orchestration.trial import TrialSpec

    wd = tmp_path / "runs"
    r = orch("train", "--preset", "demo", "--set", "train.epochs=100", *SMALL, workdir=wd, uri=mlflow_server)
    assert r.returncode == 0, r.stderr
    trial = only_trial(wd)
    wait_for(lambda: last_step(trial) >= 10, 300, "training to start")
    (trial / "CANCEL_REQUESTED").write_text("from another host\n")  # no signal is sent
    wait_for(lambda: all(j["state"] == "CANCELLED" for j in jobs(trial)), 120, "jobs cancelled")
    assert run_of(trial, mlflow_server).info.status == "KILLED"
    assert last_step(trial) < 1000

    # a pid recorded on another host: never signalled, alive only while the heartbeat is fresh
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (trial / "runner.pid").write_text(f"{sleeper.pid} not-{socket.gethostname()}\n")
        (trial / "runner.heartbeat").touch()
        assert runner_alive(trial)
        LocalBackend().cancel(TrialSpec.load(trial))
        time.sleep(1)
        assert sleeper.poll() is None, "a pid from another host was signalled"
        stale = time.time() - 7 * HEARTBEAT_S
        os.utime(trial / "runner.heartbeat", (stale, stale))
        assert not runner_alive(trial)
    finally:
        os.killpg(sleeper.pid, signal.SIGKILL)


def test_tracking_outage_loses_nothing(tmp_path, services):
    """The server dies mid-training: training and evaluation finish; `mugs-orch sync` delivers everything."""
    port = services.free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path / "store", port)
    try:
        services.wait_http_ok(f"{uri}/health", 120, server)
        wd = tmp_path / "runs"
        r = orch(
            "train",
            "--preset",
            "demo",
            "--set",
            "train.max_steps=40",
            "--set",
            "train.log_every=2",
            *SMALL,
            workdir=wd,
            uri=uri,
        )
        assert r.returncode == 0, r.stderr
        trial = only_trial(wd)
        wait_for(lambda: last_step(trial) >= 4, 300, "training to start")
        services.stop_process_group(server)
        wait_for(
            lambda: all(j["state"] in ("COMPLETED", "FAILED") for j in jobs(trial)), 600, "the chain to end"
        )
        assert [j["state"] for j in jobs(trial)] == ["COMPLETED", "COMPLETED"], jobs(trial)
        assert (trial / "mlflow_spool.jsonl").exists(), "undelivered metrics were spooled"
        runner_log = (trial / "logs" / "runner.log").read_text()
        assert "unreachable" in runner_log.lower()

        server = _start_server(tmp_path / "store", port)
        services.wait_http_ok(f"{uri}/health", 120, server)
        s = orch("sync", trial.name, workdir=wd, uri=uri)
        assert s.returncode == 0, s.stderr
        run = run_of(trial, uri)
        assert run.info.status == "FINISHED"
        assert sorted(metric_steps(uri, run.info.run_id, "train/loss")) == list(range(2, 41, 2))
        assert "eval/knn_top1" in run.data.metrics
        again = orch("sync", trial.name, workdir=wd, uri=uri)
        assert "delivered 0" in again.stdout
        assert sorted(metric_steps(uri, run.info.run_id, "train/loss")) == list(range(2, 41, 2))
    finally:
        services.stop_process_group(server)
        mlflow.set_tracking_uri(None)


def test_the_driver_wakes_when_a_runner_it_started_ends() -> None:
    """``wait_for_an_exit``: returns (True) once one of the processes ends, long before its
    timeout, and reaps it; with none ending, it waits out the timeout and says so."""
    from orchestration.sweeps.executors import wait_for_an_exit

    quick = subprocess.Popen([sys.executable, "-c", "pass"])
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert wait_for_an_exit([slow, quick], timeout_s=120.0) is True
        assert quick.returncode == 0 and slow.poll() is None
        assert wait_for_an_exit([slow], timeout_s=0.3) is False
    finally:
        slow.kill()
        slow.wait()
