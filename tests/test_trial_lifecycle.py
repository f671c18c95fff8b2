"""Trial lifecycle without holes: one state vocabulary, liveness that survives pid reuse, a job
killed by a signal recorded, and a sweep whose driver is SIGKILLed at every stage resuming with
one run per trial, no step trained twice and no run left RUNNING (real MLflow server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from orchestration.backends.liveness import ProcessRecord, write_record
from orchestration.backends.local import LocalBackend, runner_alive
from orchestration.failpoints import ENV as FAILPOINT_ENV
from orchestration.status import cancel_trial
from orchestration.sweeps.executors import wait_local
from orchestration.trial import TrialPaths, TrialSpec, TrialState, file_state
from tests.helpers import demo_config
from tests.orch_helpers import wait_for

REPO = Path(__file__).resolve().parents[1]


def _spec(tmp_path: Path, **config_overrides: str) -> TrialSpec:
    cfg = demo_config(*(f"{k}={v}" for k, v in config_overrides.items()))
    spec = TrialSpec(trial_id="t", trial_dir=str(tmp_path / "t"), config=cfg.to_dict(), evals=["knn"])
    spec.dir.mkdir(parents=True)
    spec.save()
    return spec


def test_file_state_reads_the_markers(tmp_path):
    paths = TrialPaths(tmp_path / "t")
    assert file_state(paths.dir) == TrialState.NEW
    spec = _spec(tmp_path)
    assert file_state(spec.dir) == TrialState.PENDING
    paths.metrics.write_text('{"step": 5}\n')
    assert file_state(spec.dir) == TrialState.RUNNING
    paths.pretrained.write_text("10\n")
    assert file_state(spec.dir) == TrialState.EVALUATING
    paths.eval_result("knn").write_text("{}\n")
    assert file_state(spec.dir) == TrialState.DONE and TrialState.DONE.ended
    paths.failed.write_text("boom\n")
    assert file_state(spec.dir) == TrialState.FAILED
    paths.pruned.write_text("pruned\n")
    assert file_state(spec.dir) == TrialState.PRUNED
    assert {TrialState.DONE: 1}.get("done") == 1, "states are interchangeable with their csv values"
    assert [s.run_status for s in (TrialState.DONE, TrialState.FAILED, TrialState.STOPPED)] == [
        "FINISHED",
        "FAILED",
        "KILLED",
    ]


def test_stale_pid_file_naming_an_unrelated_process_is_neither_waited_on_nor_signalled(tmp_path):
    """After a reboot or pid reuse, runner.pid may name a live process that is not the runner: an
    old-format file (pid host) proves nothing, a record whose start time differs is another
    process. Neither is alive for the sweep, and cancel never signals it. The same record with
    the right start time is alive (so this test can fail)."""
    spec = _spec(tmp_path)
    pid_file = spec.paths.runner_pid
    stranger = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        time.sleep(0.2)
        real = ProcessRecord.of(stranger.pid)
        assert real is not None
        write_record(pid_file, real)
        assert runner_alive(spec.dir), "the recorded process itself is alive"
        for stale in (
            f"{stranger.pid} {real.host}\n",  # the format of older versions: a bare pid
            ProcessRecord(stranger.pid, real.host, real.boot, real.start + 1).line(),  # pid reused
            ProcessRecord(stranger.pid, real.host, "another-boot", real.start).line(),  # rebooted
        ):
            pid_file.write_text(stale)
            assert not runner_alive(spec.dir), stale
            t0 = time.monotonic()
            assert wait_local(spec.dir, poll_s=0.1) == TrialState.STOPPED
            assert time.monotonic() - t0 < 5, "waited on a process that is not the runner"
            LocalBackend().cancel(spec)
            time.sleep(0.3)
            assert stranger.poll() is None, f"an unrelated process was signalled ({stale!r})"
    finally:
        os.killpg(stranger.pid, signal.SIGKILL)
        stranger.wait()


def test_cancel_leaves_a_finished_trial_alone(tmp_path):
    spec = _spec(tmp_path)
    spec.paths.pretrained.write_text("10\n")
    spec.paths.eval_result("knn").write_text("{}\n")
    assert cancel_trial(spec.dir) is False
    assert not spec.paths.cancel_request.exists()
    assert file_state(spec.dir) == TrialState.DONE


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _start_long_trial(tmp_path: Path) -> tuple[TrialSpec, int, int]:
    spec = _spec(tmp_path, **{"train.epochs": "100"})
    LocalBackend(threads=1).submit(spec)
    runner = ProcessRecord.of(int(spec.paths.runner_pid.read_text().split()[0]))
    assert runner is not None
    wait_for(lambda: spec.paths.metrics.exists(), 300, "training to start")
    (child,) = _children(runner.pid)
    return spec, runner.pid, child


def test_a_job_killed_by_a_signal_is_recorded(tmp_path):
    """The trainer is SIGKILLed (what the OOM killer does): its runner records the job FAILED with
    the signal, writes the FAILED marker with the reason, cancels the evaluation and exits,
    removing its pid file."""
    spec, runner, child = _start_long_trial(tmp_path)
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: not runner_alive(spec.dir), 60, "the runner to end")
    jobs = json.loads(spec.paths.jobs.read_text())
    assert [(j["kind"], j["state"]) for j in jobs] == [("pretrain", "FAILED"), ("eval", "CANCELLED")]
    assert jobs[0]["exit_code"] == "0:9"
    assert "killed by SIGKILL" in spec.paths.failed.read_text()
    assert not spec.paths.runner_pid.exists(), "the runner removes its pid file"
    assert file_state(spec.dir) == TrialState.FAILED


def test_a_killed_runner_takes_its_trainer_with_it(tmp_path):
    """A runner killed by SIGKILL leaves no trainer behind (a new runner would train the same
    directory twice): the job dies with it."""
    spec, runner, child = _start_long_trial(tmp_path)
    os.kill(runner, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{child}").exists() or _zombie(child), 30, "the trainer to die")
    assert not runner_alive(spec.dir)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


# ------------------------------------------------------------------ chaos
CHAOS_SPEC = """\
name: chaos
axes:
  - key: method.topk
    values: [4, 8]
seeds: [0]
search: {kind: grid, metric: eval/knn_top1, direction: maximize}
evals: [knn]
backend: {name: local, cpus_per_trial: 1}
default_profile: demo
profiles:
  demo: {preset: demo}
"""
CHAOS_SETS = ["--set", "train.max_steps=40", "--set", "data.subset=256", "--set", "train.batch_size=32"]


def _sweep(spec: Path, wd: Path, uri: str, failpoint: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != FAILPOINT_ENV}
    if failpoint:
        env[FAILPOINT_ENV] = failpoint
    cmd = [sys.executable, "-m", "orchestration.cli", "sweep", str(spec), "--workdir", str(wd)]
    cmd += ["--tracking-uri", uri, *CHAOS_SETS]
    log = open(wd.parent / "driver.log", "a")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log, start_new_session=False)


def _trial_dirs(wd: Path) -> list[Path]:
    return sorted(p.parent for p in (wd / "trials").glob("*/trial.yaml"))


def _kill_when(proc: subprocess.Popen, predicate, what: str) -> None:
    wait_for(lambda: predicate() or proc.poll() is not None, 600, what, poll=0.2)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)  # the driver only: runners live in their own sessions
    proc.wait(60)


@pytest.mark.mlflow
@pytest.mark.timeout(1500)
def test_driver_killed_at_every_stage_resumes_without_holes(tmp_path, mlflow_server):
    """One sweep, its driver SIGKILLed in turn after the parent run exists, after a trial's claim
    (trial.yaml) but before its run, after its run but before trial.yaml holds the run id,
    mid-training, mid-evaluation and while finishing; then rerun to completion. At the end: one
    MLflow run per config hash, every run FINISHED (none RUNNING), each trial pretrained by one
    start (a later start only resumes a checkpoint), no step logged twice."""
    wd = tmp_path / "w"
    wd.mkdir()
    spec = tmp_path / "chaos.yaml"
    spec.write_text(CHAOS_SPEC)
    for point in ("sweep:after_parent", "trial:claimed", "trial:run_created"):
        p = _sweep(spec, wd, mlflow_server, point)
        assert p.wait(300) == -signal.SIGKILL, f"the failpoint {point} was not reached"
    steps = lambda: max((_last_step(d) for d in _trial_dirs(wd)), default=0)  # noqa: E731
    _kill_when(_sweep(spec, wd, mlflow_server), lambda: steps() >= 10, "mid-training")
    pretrained = lambda: any(TrialPaths(d).pretrained.exists() for d in _trial_dirs(wd))  # noqa: E731
    _kill_when(_sweep(spec, wd, mlflow_server), pretrained, "mid-evaluation")
    p = _sweep(spec, wd, mlflow_server, "sweep:finishing")
    assert p.wait(900) == -signal.SIGKILL, "the finishing failpoint was not reached"
    final = _sweep(spec, wd, mlflow_server)
    assert final.wait(900) == 0, (tmp_path / "driver.log").read_text()[-4000:]

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("chaos")
    runs = client.search_runs([exp.experiment_id], "tags.`mugs.role` = 'trial'", max_results=100)
    hashes = [r.data.tags["mugs.config_hash"] for r in runs]
    assert len(hashes) == 3 and len(set(hashes)) == 3, "one run per config hash (2 settings + reference)"
    assert {r.info.status for r in runs} == {"FINISHED"}
    everything = client.search_runs([exp.experiment_id], max_results=100)
    assert not [r.info.run_id for r in everything if r.info.status == "RUNNING"], "a run left RUNNING"
    for d in _trial_dirs(wd):
        paths = TrialPaths(d)
        logged = [json.loads(x)["step"] for x in paths.metrics.read_text().splitlines()]
        assert len(logged) == len(set(logged)), f"{d.name}: a step was logged twice"
        starts = paths.starts.read_text().splitlines()
        assert len(starts) == 1, f"{d.name}: pretraining started {len(starts)} times: {starts}"
        assert starts[0].endswith(" from_step=0")
        assert file_state(d) == TrialState.DONE


def _last_step(d: Path) -> int:
    p = TrialPaths(d).metrics
    try:
        lines = p.read_text().splitlines()
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except (OSError, ValueError, KeyError):
        return 0


def test_reports_read_the_drivers_states():
    """trials.csv holds TrialState values: a trial without a run yet, still evaluating or pending,
    is RUNNING in a report (it was MISSING when the vocabularies differed)."""
    from reports.aggregate import FAILED, MISSING, PRUNED, RUNNING, state_of_csv

    expected = {
        TrialState.PENDING: RUNNING,
        TrialState.RUNNING: RUNNING,
        TrialState.EVALUATING: RUNNING,
        TrialState.FAILED: FAILED,
        TrialState.PRUNED: PRUNED,
        TrialState.STOPPED: MISSING,
    }
    assert {s: state_of_csv(s.value) for s in expected} == expected


def test_job_end_states_map_to_run_statuses_with_the_reason():
    from orchestration.status import jobs_verdict

    def chain(pre: str, ev: str, code: str = "") -> list[dict]:
        return [
            {"kind": "pretrain", "protocol": None, "job_id": "1", "state": pre, "exit_code": code},
            {"kind": "eval", "protocol": "knn", "job_id": "2", "state": ev, "exit_code": ""},
        ]

    assert jobs_verdict(chain("COMPLETED", "COMPLETED")) is None
    assert jobs_verdict(chain("RUNNING", "PENDING")) is None, "not over yet"
    for pre, status in (
        ("OUT_OF_MEMORY", "FAILED"),
        ("NODE_FAIL", "FAILED"),
        ("TIMEOUT", "FAILED"),
        ("FAILED", "FAILED"),
        ("CANCELLED", "KILLED"),
        ("PREEMPTED", "KILLED"),
    ):
        got = jobs_verdict(chain(pre, "CANCELLED", "0:9"))
        assert got is not None and got[0] == status, (pre, got)
        assert got[1].startswith(f"pretrain {pre} (exit 0:9); eval:knn CANCELLED"), got[1]


@pytest.mark.slurm
@pytest.mark.mlflow
@pytest.mark.timeout(1200)
def test_driver_killed_after_sbatch_reattaches_instead_of_resubmitting(
    slurm_cluster, slurm_workdir, mlflow_server
):
    """The driver is SIGKILLed after sbatch accepted the arrays but before any trial recorded its
    job ids: the claim written before sbatch (a unique job name) lets the rerun find those jobs
    in sacct and wait for them. Each trial is pretrained by one job start; one run per hash."""
    wd = slurm_workdir / "claim"
    spec = slurm_workdir / "chaos.yaml"
    spec.write_text(CHAOS_SPEC.replace("name: chaos", "name: chaos_slurm"))
    extra = ["--backend", "slurm", "--cpus", "1", "--time", "10"]
    env = {**os.environ, FAILPOINT_ENV: "slurm:submitted"}
    cmd = [sys.executable, "-m", "orchestration.cli", "sweep", str(spec), "--workdir", str(wd)]
    cmd += ["--tracking-uri", mlflow_server, *CHAOS_SETS, *extra]
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    # the first array (one per evaluation list) was submitted; the kill came before the second
    claimed = [json.loads(p.read_text())[0] for d in _trial_dirs(wd) if (p := TrialPaths(d).jobs).exists()]
    assert claimed and all(j["state"] == "SUBMITTING" and j["claim"] for j in claimed), claimed
    env.pop(FAILPOINT_ENV)
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "still running (re-attached)" in again.stdout
    for d in _trial_dirs(wd):
        starts = TrialPaths(d).starts.read_text().splitlines()
        assert len(starts) == 1, f"{d.name}: pretraining started {len(starts)} times"
        assert file_state(d) == TrialState.DONE
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("chaos_slurm")
    runs = client.search_runs([exp.experiment_id], "tags.`mugs.role` = 'trial'")
    hashes = [r.data.tags["mugs.config_hash"] for r in runs]
    assert len(hashes) == len(set(hashes)) == 3 and {r.info.status for r in runs} == {"FINISHED"}
