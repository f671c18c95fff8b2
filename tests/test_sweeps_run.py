"""Sweeps end to end: local (Ray Tune), SLURM arrays, kill-and-resume, Optuna; real MLflow server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from orchestration.reference import REFERENCE_TAG

pytestmark = [pytest.mark.mlflow, pytest.mark.timeout(1200)]
REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "train.max_steps=6", "--set", "data.subset=256", "--set", "train.batch_size=32"]


def sweep_cmd(spec: Path | str, wd: Path, uri: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "orchestration.cli",
        "sweep",
        str(spec),
        "--workdir",
        str(wd),
        "--tracking-uri",
        uri,
        *TINY,
        *extra,
    ]


def run_report(sweep: str, wd: Path, uri: str, out: Path, formats: str) -> subprocess.CompletedProcess[str]:
    """``mugs-orch report SWEEP`` into ``out`` in the given formats."""
    cmd = [sys.executable, "-m", "orchestration.cli", "report", sweep, "--workdir", str(wd)]
    cmd += ["--tracking-uri", uri, "--out", str(out), "--format", formats]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)


def one_seed_spec(folder: Path) -> Path:
    """sweeps/loss_weights.yaml as shipped but with one seed (its 2 seeds would double CI time)."""
    spec = yaml.safe_load((REPO / "sweeps" / "loss_weights.yaml").read_text())
    spec["seeds"] = [0]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "loss_weights.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def runs_of(uri: str, wd: Path, sweep: str) -> tuple[object, list]:
    """The sweep's parent run (from the sweep's state) and every run that names it as parent."""
    client = mlflow.MlflowClient(tracking_uri=uri)
    parent_id = json.loads((wd / "sweeps" / sweep / "state.json").read_text())["parent_run_id"]
    parent = client.get_run(parent_id)
    exps = [e.experiment_id for e in client.search_experiments()]
    children = client.search_runs(exps, f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=1000)
    assert all(c.data.tags.get("mugs.role") == "trial" for c in children)
    return parent, children


def split_references(children: list) -> tuple[list, list]:
    """(the sweep's trials, its reference trials: runs tagged mugs.reference)."""
    refs = [c for c in children if REFERENCE_TAG in c.data.tags]
    return [c for c in children if REFERENCE_TAG not in c.data.tags], refs


def test_loss_weight_sweep_local(tmp_path, mlflow_server):
    wd = tmp_path / "w"
    r = subprocess.run(
        sweep_cmd(one_seed_spec(tmp_path), wd, mlflow_server),
        capture_output=True,
        text=True,
        timeout=1100,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    parent, everything = runs_of(mlflow_server, wd, "loss_weights")
    children, refs = split_references(everything)
    assert len(children) == 10 and len(refs) == 1, "10 settings x 1 seed, one reference trial per seed"
    assert {c.data.tags["mlflow.parentRunId"] for c in everything} == {parent.info.run_id}
    (ref,) = refs
    assert ref.info.status == "FINISHED" and ref.data.tags[REFERENCE_TAG] == "untrained"
    assert {"eval/knn_top1", "eval/pixels/knn_top1"} <= set(ref.data.metrics)
    assert all(c.info.status == "FINISHED" and "eval/knn_top1" in c.data.metrics for c in children)
    weights = {c.data.params["method.loss_weights"] for c in children}
    assert len(weights) == 10
    arts = {
        a.path for a in mlflow.MlflowClient(tracking_uri=mlflow_server).list_artifacts(parent.info.run_id)
    }
    assert {"spec.yaml", "trials.csv"} <= arts
    assert parent.data.tags["mugs.sweep_state"] == "finished"
    assert "best eval/knn_top1" in r.stdout

    # the report of this very sweep: one row per weight combination, values as in MLflow
    out = tmp_path / "report"
    rep = run_report("loss_weights", wd, mlflow_server, out, "md,tex,csv,html")
    assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-2000:]
    assert all((out / f"report.{ext}").exists() for ext in ("md", "tex", "csv", "html"))
    import csv

    everything = list(csv.DictReader((out / "report.csv").open()))
    rows = [r for r in everything if not r["reference"]]
    assert len(rows) == 10, "one row per weight combination"
    untrained, pixels = everything[:2]  # the reference block on top
    assert (untrained["reference"], pixels["reference"]) == ("untrained", "pixels")
    assert float(untrained["eval/knn_top1.mean"]) == pytest.approx(
        ref.data.metrics["eval/knn_top1"], abs=1e-9
    )
    assert float(pixels["eval/knn_top1.mean"]) == pytest.approx(
        ref.data.metrics["eval/pixels/knn_top1"], abs=1e-9
    )
    assert "reference: untrained network" in (out / "report.md").read_text()
    assert all(r["n"] == "1" for r in rows), "n = number of seeds"
    from_mlflow = sorted(c.data.metrics["eval/knn_top1"] for c in children)
    assert sorted(float(r["eval/knn_top1.mean"]) for r in rows) == pytest.approx(from_mlflow, abs=1e-9)


def test_optuna_sweep_proposes_distinct_configs(tmp_path, mlflow_server):
    spec = tmp_path / "optuna.yaml"
    spec.write_text(
        "name: optuna_topk\n"
        "axes:\n"
        "  - {key: method.topk, low: 1, high: 16, integer: true}\n"
        "  - {key: method.instance_queue_size, choices: [256, 512, 1024]}\n"
        "search: {kind: optuna, trials: 6, parallel: 2, metric: eval/knn_top1, direction: maximize}\n"
        "default_profile: demo\n"
        "profiles: {demo: {preset: demo}}\n"
    )
    wd = tmp_path / "w"
    r = subprocess.run(
        sweep_cmd(spec, wd, mlflow_server), capture_output=True, text=True, timeout=1100, cwd=REPO
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    parent, everything = runs_of(mlflow_server, wd, "optuna_topk")
    children, refs = split_references(everything)
    assert len(refs) == 1 and refs[0].info.status == "FINISHED", "one reference trial (seed 0)"
    settings = {(c.data.params["method.topk"], c.data.params["method.instance_queue_size"]) for c in children}
    assert len(children) >= 6 and len(settings) == len(children), "distinct configs"
    best = max(c.data.metrics["eval/knn_top1"] for c in children)
    assert float(parent.data.tags["mugs.best_value"]) == pytest.approx(best, abs=1e-3)
    assert (wd / "sweeps" / "optuna_topk" / "optuna.journal").exists()


@pytest.mark.slurm
def test_loss_weight_sweep_on_slurm(slurm_cluster, slurm_workdir, mlflow_server):
    wd = slurm_workdir / "w"
    r = subprocess.run(
        sweep_cmd(
            one_seed_spec(slurm_workdir),
            wd,
            mlflow_server,
            "--backend",
            "slurm",
            "--cpus",
            "1",
            "--time",
            "10",
        ),
        capture_output=True,
        text=True,
        timeout=1100,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    parent, children = runs_of(mlflow_server, wd, "loss_weights")
    mine, refs = split_references(children)
    assert len(mine) == 10 and all(c.data.tags["mugs.backend"] == "slurm" for c in children)
    assert len(refs) == 1 and "eval/pixels/knn_top1" in refs[0].data.metrics
    assert all(c.info.status == "FINISHED" and "eval/knn_top1" in c.data.metrics for c in mine)
    assert all("_" in c.data.tags["slurm.pretrain_job_id"] for c in mine), "grid submitted as a job array"

    # rerunning the finished sweep submits nothing and returns at once
    again = subprocess.run(
        sweep_cmd(slurm_workdir / "loss_weights.yaml", wd, mlflow_server, "--backend", "slurm"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert again.returncode == 0 and "11 finished or pruned (not rerun)" in again.stdout, again.stderr[-2000:]
    _, children_again = runs_of(mlflow_server, wd, "loss_weights")
    assert len(children_again) == 11
