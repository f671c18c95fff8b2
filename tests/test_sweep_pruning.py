"""Pruning end to end: median on the local backend, ASHA on a separately started Ray cluster.

Every decision the driver logs is re-derived here from the trials' own metrics.jsonl with the
rule written out (median of completed settings; ASHA's top-1/eta at each rung), so a wrong
value, a wrong rule or a stopped trial that should have run fails the test. The learning rates
are chosen so the first two settings (the ones that complete first) learn fast and the later
ones do not (lr 0 keeps the initial weights), so at least one trial is pruned.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.test_sweeps_run import runs_of

pytestmark = [pytest.mark.mlflow, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[1]
TOTAL_STEPS = 44  # demo preset, 2 epochs of digits at batch 64
OFFICIAL_STYLE = {
    "model.use_bn_in_head": False,
    "train.momentum_teacher": 0.99,
    "data.strong_prob": 0.5,
    "data.local_crops_number": 4,
    "data.solarize_prob": 0.2,
    "data.flip_prob": 0.5,
    "data.global_crops_scale": [0.4, 1.0],
    "data.augment_backend": "pil",  # strong views exist on the PIL path only
    "train.batch_size": 64,
}


def _spec(tmp: Path, name: str, search: dict) -> Path:
    spec = {
        "name": name,
        # the demo preset with the official-style recipe these lrs were chosen for (BN-free heads,
        # teacher momentum 0.99, strong views, local crops): 0.5/0.3 learn fast, 1.0/0.0 do not
        "base": {"preset": "demo", "overrides": {"train.epochs": 2, **OFFICIAL_STYLE}},
        "axes": [{"key": "train.lr", "values": [0.5, 0.3, 1.0, 0.0]}],
        "search": {"kind": "grid", **search},
        "evals": ["knn"],
        "backend": {"name": "local", "cpus_per_trial": 1},
    }
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _sweep(
    spec: Path, wd: Path, uri: str, *extra: str, env: dict | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "orchestration.cli", "sweep", str(spec), "--workdir", str(wd)]
    return subprocess.run(
        [*cmd, "--tracking-uri", uri, *extra], capture_output=True, text=True, timeout=800, cwd=REPO, env=env
    )


def _monitor(trial_dir: Path) -> dict[int, float]:
    out = {}
    for line in (trial_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "monitor/knn_top1" in rec:
            out[rec["step"]] = rec["monitor/knn_top1"]
    return out


def _decisions(wd: Path, sweep: str) -> tuple[list[dict], dict[str, dict[int, float]]]:
    """The logged decisions, and each setting's monitor series (mean over its seeds) from disk."""
    log = [json.loads(x) for x in (wd / "sweeps" / sweep / "pruning.jsonl").read_text().splitlines()]
    series: dict[str, dict[int, float]] = {}
    for rec in log:
        per_trial = [_monitor(wd / "trials" / t) for t in rec["trials"]]
        steps = set.intersection(*(set(s) for s in per_trial))
        series[rec["setting"]] = {s: statistics.fmean(p[s] for p in per_trial) for s in steps}
    for rec in log:  # the driver read the values the trainer wrote
        assert rec["value"] == pytest.approx(series[rec["setting"]][rec["step"]]), rec
    return log, series


def _check_outcome(wd: Path, uri: str, sweep: str, out: str) -> list[Path]:
    """Pruned trials stopped early, without evaluation, KILLED and tagged; the rest finished."""
    trials = sorted((wd / "trials").iterdir())
    pruned = [d for d in trials if (d / "PRUNED").exists()]
    assert pruned, "no trial was pruned:\n" + out[-3000:]
    assert len(pruned) < len(trials)
    parent, children = runs_of(uri, wd, sweep)
    runs = {c.data.tags["mlflow.runName"]: c for c in children}
    assert len(runs) == len(trials)
    for d in trials:
        run = runs[d.name]
        if d in pruned:
            assert max(_monitor(d)) < TOTAL_STEPS and not (d / "eval_knn.json").exists()
            assert run.info.status == "KILLED" and run.data.tags.get("mugs.pruned") == "true"
            assert not any(k.startswith("eval/") for k in run.data.metrics)
            assert "pruned by the" in run.data.tags["mugs.failure_reason"]
        else:
            assert run.info.status == "FINISHED" and "eval/knn_top1" in run.data.metrics
    assert parent.data.tags["mugs.trials_pruned"] == str(len(pruned))
    assert parent.data.tags["mugs.sweep_state"] == "finished"
    return pruned


def _rerun_runs_nothing(spec: Path, wd: Path, uri: str, *extra: str, env: dict | None = None) -> None:
    starts = {d.name: (d / "pretrain_starts.log").read_text() for d in (wd / "trials").iterdir()}
    r = _sweep(spec, wd, uri, *extra, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "(not rerun)" in r.stdout
    assert {d.name: (d / "pretrain_starts.log").read_text() for d in (wd / "trials").iterdir()} == starts


def test_median_pruning_local(tmp_path, mlflow_server):
    spec = _spec(
        tmp_path, "prune_median", {"pruner": "median", "pruning": {"every": 10, "startup_trials": 2}}
    )
    wd = tmp_path / "w"
    r = _sweep(spec, wd, mlflow_server)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "pruned" in r.stdout

    log, series = _decisions(wd, "prune_median")
    for rec in log:
        s = rec["step"]
        best = max(v for st, v in series[rec["setting"]].items() if st <= s)
        done = [series[k][s] for k in rec["completed"] if s in series.get(k, {})]
        expected = len(rec["completed"]) >= 2 and bool(done) and best < statistics.median(done)
        assert rec["verdict"] == expected, rec
        assert rec["pruned"] == (expected and rec["pretraining"]), rec
    pruned = _check_outcome(wd, mlflow_server, "prune_median", r.stdout)
    assert {t for rec in log if rec["pruned"] for t in rec["trials"]} == {d.name for d in pruned}
    _rerun_runs_nothing(spec, wd, mlflow_server)

    # the report lists pruned settings as PRUNED, not as failures
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "orchestration.cli", "report", "prune_median", "--workdir", str(wd)]
    cmd += ["--tracking-uri", mlflow_server, "--out", str(out), "--format", "csv,md"]
    rep = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-2000:]
    rows = {
        float(x["train.lr"]): x for x in csv.DictReader((out / "report.csv").open()) if not x["reference"]
    }
    lr_of = {d.name: yaml.safe_load((d / "trial.yaml").read_text())["config"]["train"]["lr"] for d in pruned}
    for lr, row in rows.items():
        was_pruned = lr in lr_of.values()
        assert row["status"] == ("PRUNED" if was_pruned else "OK"), row
        assert (row["pruned"], row["failed"]) == (("1" if was_pruned else "0"), "0"), row
    assert "PRUNED" in (out / "report.md").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(tmp_path):
    """A one-node Ray cluster of 2 CPUs with token authentication, started apart from the
    sweep's process. Yields its address and the environment a client needs (the token)."""
    import secrets

    port = _free_port()
    token = tmp_path / "ray-token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    ray = Path(sys.executable).parent / "ray"
    log = open(tmp_path / "ray-head.log", "w")
    proc = subprocess.Popen(
        [str(ray), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", f"--port={port}"]
        + ["--num-cpus=2", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**env, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            st = subprocess.run(
                [str(ray), "status", f"--address={address}"], capture_output=True, text=True, env=env
            )
            if st.returncode == 0:
                break
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "ray-head.log").read_text()
            time.sleep(2)
        yield address, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # only this cluster's processes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_asha_pruning_on_an_existing_ray_cluster(tmp_path, mlflow_server, ray_cluster):
    search = {"pruner": "asha", "pruning": {"every": 10, "min_resource": 10, "reduction_factor": 2}}
    spec = _spec(tmp_path, "prune_asha", search)
    wd = tmp_path / "w"
    address, env = ray_cluster
    ray_args = ("--backend", "ray", "--address", address)

    # without the cluster's token: a clear error, exit 2, nothing created
    no_token = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    r = _sweep(spec, wd, mlflow_server, *ray_args, env=no_token)
    assert r.returncode == 2 and "RAY_AUTH_MODE=token" in r.stderr, r.stderr[-2000:]
    assert not wd.exists()

    r = _sweep(spec, wd, mlflow_server, *ray_args, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    # every trial ran on that cluster, not on a Ray the driver started itself
    port = address.rsplit(":", 1)[1]
    for d in (wd / "trials").iterdir():
        placed = [json.loads(x) for x in (d / "ray_placement.jsonl").read_text().splitlines()]
        assert placed and all(p["gcs_address"].endswith(f":{port}") for p in placed), placed

    # ASHA: at rung steps 10, 20, 40 a trial goes on only if its value is in the top
    # max(1, n // 2) of the n values recorded at that rung so far (its own included)
    log, _ = _decisions(wd, "prune_asha")
    rungs = {10, 20, 40}
    seen: dict[int, list[float]] = {s: [] for s in rungs}
    for rec in log:
        s, v = rec["step"], rec["value"]
        if s not in rungs:
            assert rec["verdict"] is False, rec
            continue
        seen[s].append(v)
        keep = max(1, len(seen[s]) // 2)
        expected = v < sorted(seen[s], reverse=True)[keep - 1]
        assert rec["verdict"] == expected, (rec, seen[s])
        assert rec["pruned"] == (expected and rec["pretraining"]), rec
    _check_outcome(wd, mlflow_server, "prune_asha", r.stdout)
    _rerun_runs_nothing(spec, wd, mlflow_server, *ray_args, env=env)


@pytest.mark.slow
def test_median_pruning_on_slurm(tmp_path, mlflow_server, slurm_workdir, services):
    """The SLURM backend: a pruned trial's array task and its evaluation end CANCELLED in sacct."""
    spec = _spec(tmp_path, "prune_slurm", {"pruner": "median", "pruning": {"every": 10, "startup_trials": 2}})
    wd = slurm_workdir / "w"
    r = _sweep(spec, wd, mlflow_server, "--backend", "slurm", "--cpus", "1", "--time", "20")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    pruned = _check_outcome(wd, mlflow_server, "prune_slurm", r.stdout)
    for d in pruned:
        jobs = json.loads((d / "jobs.json").read_text())
        states = {j["kind"]: services.sacct_record(j["job_id"])["State"] for j in jobs}
        assert states["pretrain"].startswith("CANCELLED") and states["eval"].startswith("CANCELLED"), states
    _rerun_runs_nothing(spec, wd, mlflow_server, "--backend", "slurm")


@pytest.mark.slow
def test_ray_cluster_inside_a_slurm_allocation(tmp_path, mlflow_server, slurm_workdir, services):
    """scripts/ray-slurm.sbatch: a Ray head in the allocation, the sweep driven against it."""
    search = {"pruner": "asha", "pruning": {"every": 10, "min_resource": 10, "reduction_factor": 2}}
    spec = _spec(tmp_path, "ray_in_slurm", search)
    wd = slurm_workdir / "w"
    port = _free_port()
    env = {
        **os.environ,
        "RAY_PORT": str(port),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "MUGS_ORCH": f"{sys.executable} -m orchestration.cli",
    }
    out = slurm_workdir / "job.out"
    sub = subprocess.run(
        ["sbatch", "--parsable", f"--chdir={REPO}", f"--output={out}", "--cpus-per-task=2"]
        + [str(REPO / "scripts" / "ray-slurm.sbatch"), str(spec), "--workdir", str(wd)]
        + ["--tracking-uri", mlflow_server],
        capture_output=True,
        text=True,
        env=env,
        cwd=slurm_workdir,
        check=True,
    )
    job = sub.stdout.strip().split(";")[0]
    rec = services.wait_sacct_final(job, timeout=900)
    assert rec["State"] == "COMPLETED", out.read_text()[-3000:]
    for d in (wd / "trials").iterdir():
        placed = [json.loads(x) for x in (d / "ray_placement.jsonl").read_text().splitlines()]
        assert placed and all(p["gcs_address"].endswith(f":{port}") for p in placed), placed
    _check_outcome(wd, mlflow_server, "ray_in_slurm", out.read_text())
    assert not list(slurm_workdir.glob(".ray-*")), "the job's token directory is removed"
