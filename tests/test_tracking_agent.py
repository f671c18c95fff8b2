"""The tracking agent: a job's MLflow calls made by a second process, in order, to a real MLflow
server; the job falling back to its own calls when the agent is gone; the agent delivering what
a killed job had sent, and holding the trial's lock until it has."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from orchestration.tracking import client_for, create_run, get_or_create_experiment
from orchestration.tracking.agent import TrackingAgent, lock_path, wait_for_agent
from orchestration.tracking.failfast import MAX_RETRIES_ENV, TIMEOUT_ENV

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000  # the job's timestamps (ms), kept by the agent


@pytest.fixture(autouse=True)
def _bounded_mlflow(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv(MAX_RETRIES_ENV, "0")
    monkeypatch.setenv(TIMEOUT_ENV, "5")


def _new_run(uri: str) -> str:
    return create_run(uri, get_or_create_experiment(uri, f"agent-{uuid.uuid4().hex[:10]}"), "r", {}, {})


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float, int]]:
    return sorted((m.step, m.value, m.timestamp) for m in client_for(uri).get_metric_history(run_id, key))


def test_job_side_never_imports_mlflow():
    code = (
        "import sys, orchestration.jobs.run, orchestration.jobs.tracking_calls, orchestration.tracking.agent;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.mlflow
@pytest.mark.timeout(300)
def test_agent_makes_the_calls_in_order(mlflow_server, tmp_path):
    uri, run_id = mlflow_server, _new_run(mlflow_server)
    fallback: list[str] = []
    agent = TrackingAgent(tmp_path, lambda op, args: fallback.append(op))
    agent.call("set_tags", uri, run_id, {"mugs.order": "first"})
    agent.call("set_status", uri, run_id, "RUNNING")
    agent.call("metrics_open", uri, run_id, tmp_path / "spool.jsonl")
    for step in range(1, 6):
        agent.call("step", T0 + step, {"step": step, "loss": 10.0 - step, "note": "not a number"})
    agent.call("metrics_close")
    agent.call("set_tags", uri, run_id, {"mugs.order": "second"})  # overwrites: order kept
    agent.call("set_status", uri, run_id, "FINISHED")
    assert not wait_for_agent(tmp_path, timeout_s=0.2)  # alive: its lock is held
    assert agent.close(timeout_s=120)
    assert wait_for_agent(tmp_path, timeout_s=1)
    assert fallback == []
    run = client_for(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mugs.order"] == "second"
    assert _history(uri, run_id, "train/loss") == [(s, 10.0 - s, T0 + s) for s in range(1, 6)]
    assert "train/note" not in run.data.metrics
    assert not (tmp_path / "spool.jsonl").exists()


@pytest.mark.mlflow
@pytest.mark.timeout(300)
def test_job_tracks_itself_when_the_agent_is_gone(mlflow_server, tmp_path, capfd):
    uri, run_id = mlflow_server, _new_run(mlflow_server)
    agent = TrackingAgent(tmp_path)  # falls back to making the calls here
    agent.call("metrics_open", uri, run_id, tmp_path / "spool.jsonl")
    agent.call("step", T0 + 1, {"step": 1, "loss": 1.5})
    agent._proc.kill()  # the agent dies (OOM killer, say); the job goes on
    agent._proc.wait()
    for step in (2, 3):
        agent.call("step", T0 + step, {"step": step, "loss": 1.5 * step})
    agent.call("metrics_close")
    agent.call("set_tags", uri, run_id, {"mugs.after": "agent gone"})
    agent.call("set_status", uri, run_id, "FINISHED")
    agent.close(timeout_s=120)
    assert "tracking agent is gone" in capfd.readouterr().err
    run = client_for(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mugs.after"] == "agent gone"
    got = {s for s, _, _ in _history(uri, run_id, "train/loss")}
    assert {2, 3} <= got  # made by the job itself; step 1 only if the agent had made it


JOB = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from orchestration.tracking.agent import TrackingAgent
    trial, uri, run_id, t0 = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    agent = TrackingAgent(trial, lambda op, args: sys.exit("fallback used"))
    agent.call("set_tags", uri, run_id, {"mugs.from": "killed job"})
    agent.call("metrics_open", uri, run_id, trial / "spool.jsonl")
    for step in (1, 2, 3):
        agent.call("step", t0 + step, {"step": step, "loss": float(step)})
    while agent.sent < 5:  # written to the agent's stdin, not yet made
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.mlflow
@pytest.mark.timeout(300)
def test_killed_job_agent_delivers_then_frees_the_lock(mlflow_server, tmp_path):
    uri, run_id = mlflow_server, _new_run(mlflow_server)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    job = subprocess.run(
        [sys.executable, "-c", JOB, str(tmp_path), uri, run_id, str(T0)], cwd=REPO, env=env, timeout=120
    )
    assert job.returncode == -9
    assert lock_path(tmp_path).exists()
    assert wait_for_agent(tmp_path, timeout_s=120)  # the agent ends once it has delivered
    run = client_for(uri).get_run(run_id)
    assert run.data.tags["mugs.from"] == "killed job"
    assert _history(uri, run_id, "train/loss") == [(s, float(s), T0 + s) for s in (1, 2, 3)]


START_UP_PREEMPTION = textwrap.dedent(
    """
    import json, os, signal, sys
    from submitit.core.utils import UncompletedJobError
    from orchestration.jobs.pretrain import PretrainTask
    from orchestration.trial import TrialSpec

    trial, module, raises = sys.argv[1], sys.argv[2], sys.argv[3] == "raise"
    task = PretrainTask(TrialSpec.load(trial))
    seen = {}

    def handler(signum, frame):  # what submitit's handler does when checkpoint() returns None
        seen["checkpoint"] = repr(task.checkpoint())
        seen["mlflow_in_handler"] = sorted(m for m in sys.modules if m.split(".")[0] == "mlflow")
        if raises:  # else: as if the code it landed in swallowed the error (torch's import does)
            raise UncompletedJobError("Job not requeued because: checkpoint function returned None.")

    class PreemptMidImport:  # the USR2 lands while the job is halfway through an import
        def find_spec(self, name, path=None, target=None):
            if name == module and "checkpoint" not in seen:
                os.kill(os.getpid(), signal.SIGUSR2)
            return None

    signal.signal(signal.SIGUSR2, handler)
    sys.meta_path.insert(0, PreemptMidImport())
    try:
        task()
    except (UncompletedJobError, RuntimeError) as e:
        seen["ended"] = type(e).__name__
    print(json.dumps(seen))
    """
)


@pytest.mark.mlflow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("module", "raises", "ended"),
    [
        ("orchestration.tracking.agent", "raise", "UncompletedJobError"),  # before the agent is open
        ("mugs.distributed", "swallowed", "RuntimeError"),  # torch's import is next
    ],
)
def test_start_up_preemption_past_the_bound_ends_the_job_and_fails_the_run(
    mlflow_server, tmp_path, module, raises, ended
):
    """submitit calls ``checkpoint()`` from its USR2 handler, wherever the job was. Importing MLflow
    there, halfway through another import, can fail or break that import (seen: ImportError
    from a half-made ``yaml``); and the error submitit then raises can be swallowed by the code
    it lands in (torch's import: ``except Exception`` around its CUDA preload; seen: the job
    trained on, its run RUNNING). Either way: no MLflow in the handler, no training, the run
    FAILED with the reason and the requeue count."""
    import json

    from mugs.presets import PRESETS
    from orchestration import tags
    from orchestration.trial import TrialSpec

    uri, run_id = mlflow_server, _new_run(mlflow_server)
    trial = tmp_path / "trial"
    trial.mkdir()
    spec = TrialSpec("t", str(trial), PRESETS["demo"], tracking_uri=uri, run_id=run_id, max_requeues=1)
    spec.backend = "slurm"
    spec.save()
    env = {**os.environ, "PYTHONPATH": str(REPO), "SLURM_RESTART_COUNT": "1", "MUGS_NUM_THREADS": "1"}
    for var in ("RANK", "SLURM_PROCID", "MUGS_TRACKING_AGENT"):
        env.pop(var, None)
    job = subprocess.run(
        [sys.executable, "-c", START_UP_PREEMPTION, str(trial), module, raises],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr
    seen = json.loads(job.stdout.strip().splitlines()[-1])
    assert seen == {"checkpoint": "None", "mlflow_in_handler": [], "ended": ended}
    assert not spec.paths.starts.exists(), "training started after the refusal"
    reason = spec.paths.failed.read_text()
    assert "requeue limit 1 reached" in reason
    run = client_for(uri).get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[tags.FAILURE_REASON] == reason.strip()
    assert run.data.tags[tags.REQUEUE_COUNT] == "1"


@pytest.mark.timeout(120)
def test_an_agent_whose_start_is_interrupted_ends_and_frees_the_lock(tmp_path, monkeypatch):
    """A signal handler's error (submitit's, on a USR2 at a job's very start) can land in the
    agent's start-up after its process exists. That agent must end at once, not hold the trial's
    lock while the job lives: the job's next agent would wait 60 s for it (seen: 62 s jobs in
    ``benchmarks/startup_preemption.py``), past what a job has left before its time limit."""
    import threading

    def interrupted(self):
        raise KeyboardInterrupt("a signal handler's error")

    monkeypatch.setattr(threading.Thread, "start", interrupted)
    with pytest.raises(KeyboardInterrupt) as excinfo:  # kept: the job's frames are alive too
        TrackingAgent(tmp_path)
    monkeypatch.undo()
    assert lock_path(tmp_path).exists()
    assert wait_for_agent(tmp_path, timeout_s=45), "the interrupted agent still holds the lock"
    assert excinfo.value is not None
