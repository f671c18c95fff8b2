"""``sweeps/methods.yaml`` end to end at demo scale (tiny budget): one parent run, a child per
method and seed, each method from its own preset, and a report with a row per method beside the
reference rows; real MLflow server."""

from __future__ import annotations

import csv
import subprocess

import pytest
import yaml

from tests.test_sweeps_run import REPO, run_report, runs_of, split_references, sweep_cmd

pytestmark = [pytest.mark.mlflow, pytest.mark.timeout(1200)]


def test_methods_sweep_has_a_row_per_method(tmp_path, mlflow_server):
    wd = tmp_path / "w"
    r = subprocess.run(
        sweep_cmd(REPO / "sweeps" / "methods.yaml", wd, mlflow_server),
        capture_output=True,
        text=True,
        timeout=1100,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    parent, everything = runs_of(mlflow_server, wd, "methods")
    children, refs = split_references(everything)
    spec = yaml.safe_load((REPO / "sweeps" / "methods.yaml").read_text())
    methods, seeds = spec["axes"][0]["values"], spec["seeds"]
    assert sorted((c.data.params["method.name"], c.data.params["seed"]) for c in children) == sorted(
        (m, str(s)) for m in methods for s in seeds
    ), "a child per method and seed"
    assert len(refs) == len(seeds) and {c.data.tags["mlflow.parentRunId"] for c in everything} == {
        parent.info.run_id
    }
    assert all(c.info.status == "FINISHED" and "eval/knn_top1" in c.data.metrics for c in children)
    smog = [c for c in children if c.data.params["method.name"] == "smog"]
    # each method from its own preset: SMoG's section, SMoG's loss term and diagnostics
    assert all("method.n_groups" in c.data.params and "method.topk" not in c.data.params for c in smog)
    assert all(
        "train/loss/smog" in c.data.metrics and "train/diag/smog/target_std" in c.data.metrics for c in smog
    )
    pwself = [c for c in children if c.data.params["method.name"] == "pwself"]
    assert pwself and all("method.patch_weight" in c.data.params for c in pwself)
    assert all(
        {"train/loss/pw_image", "train/loss/pw_patch", "train/diag/pw_patch/batch_entropy"} <= c.data.metrics.keys()
        for c in pwself
    )
    univip = [c for c in children if c.data.params["method.name"] == "univip"]
    assert univip and all("method.n_instances" in c.data.params for c in univip)
    assert all(
        {"train/loss/univip_ss", "train/loss/univip_ii", "train/diag/univip_instance/target_cos"}
        <= c.data.metrics.keys()
        for c in univip
    )

    out = tmp_path / "report"
    rep = run_report("methods", wd, mlflow_server, out, "md,csv")
    assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-2000:]
    rows = list(csv.DictReader((out / "report.csv").open()))
    trained = [x for x in rows if not x["reference"]]
    assert sorted(x["method.name"] for x in trained) == sorted(methods), "one row per method"
    assert {x["reference"] for x in rows if x["reference"]} == {"untrained", "pixels"}
    assert all(x["n"] == str(len(seeds)) for x in trained)
    md = (out / "report.md").read_text()
    assert all(m in md for m in ("mugs", "smog", "pwself", "univip")) and "reference: untrained network" in md
