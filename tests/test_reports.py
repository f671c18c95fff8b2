"""reports: sweep reports compiled from a real MLflow server (fixture ``mlflow_server``).

Sweeps are written with the tracking helpers in the schema the sweep runner uses (parent run +
one child run per trial, ``spec.yaml`` and ``trials.csv`` artifacts). Expected numbers are
recomputed here from MLflow (``search_runs``) with the standard library, never taken from the
report code.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import itertools
import json
import re
import statistics
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric

from orchestration.tracking import (
    create_run,
    flatten_config,
    get_or_create_experiment,
    log_artifact,
    log_metrics,
    set_status,
)
from reports.cli import add_report_parser, run_report
from reports.fetch import fetch_histories, fetch_sweep
from reports.published import PublishedDataError, load_published
from reports.report import build_report
from reports.values import parse_value

ALL_FORMATS = "md,tex,csv,html"
KNN, LINEAR = "eval/knn_top1", "eval/linear_top1"
WEIGHTS = "method.loss_weights"
TOPK = "method.topk"


# ----------------------------------------------------------------------------- sweep builder
@dataclass
class Trial:
    """One trial of a test sweep. ``status`` None: listed in trials.csv only (no run)."""

    config: dict[str, Any]
    status: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    csv_state: str = "PENDING"


def make_config(
    weights=(1.0, 1.0, 1.0), seed=0, topk=8, arch="vit_tiny", epochs=10, dataset="digits"
) -> dict:
    """A nested config like the trainer's (only the keys that matter here, plus a few others)."""
    return {
        "model": {"arch": arch, "patch_size": 16, "drop_path_rate": 0.1},
        "method": {
            "loss_weights": [float(w) for w in weights],
            "instance_queue_size": 65536,
            "local_group_queue_size": 65536,
            "topk": topk,
        },
        "data": {"dataset": dataset, "image_size": 224, "global_crops_scale": [0.25, 1.0]},
        "train": {"epochs": epochs, "batch_size": 64, "lr": 0.0008},
        "eval": {"knn_k": [10, 20, 100, 200]},
        "seed": seed,
    }


def _hash(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def make_sweep(
    uri: str,
    tmp: Path,
    name: str,
    axes: list[str],
    trials: list[Trial],
    state: str = "finished",
    report_hints: dict | None = None,
) -> str:
    """Write a sweep (parent, children, spec.yaml, trials.csv) to MLflow; returns the parent run id."""
    client = MlflowClient(tracking_uri=uri)
    if uri.startswith(("http://", "https://")):
        experiment_id = get_or_create_experiment(uri, f"reports-{name}")
    else:  # a local store: keep its artifacts in tmp, not in ./mlruns
        experiment_id = client.create_experiment(
            f"reports-{name}", artifact_location=(tmp / "mlartifacts").as_uri()
        )
    parent_tags = {
        "mugs.sweep": name,
        "mugs.role": "sweep",
        "mugs.axes": json.dumps(axes),
        "mugs.sweep_state": state,
        "mugs.trials_expected": str(len(trials)),
    }
    parent_id = create_run(uri, experiment_id, name, params={}, tags=parent_tags)
    rows = []
    for i, trial in enumerate(trials):
        flat = flatten_config(trial.config)
        setting_hash = _hash({k: v for k, v in flat.items() if k != "seed"})
        config_hash = _hash(flat)
        trial_id = f"{name}-t{i:03d}"
        state_text = trial.status or trial.csv_state
        rows.append(
            {"trial_id": trial_id, "config_hash": config_hash, "seed": flat["seed"], "state": state_text}
            | {axis: flat[axis] for axis in axes}
        )
        if trial.status is None:
            continue
        tags = {
            "mugs.sweep": name,
            "mugs.role": "trial",
            "mugs.trial_id": trial_id,
            "mugs.config_hash": config_hash,
            "mugs.setting_hash": setting_hash,
        }
        run_id = create_run(uri, experiment_id, trial_id, params=flat, tags=tags, parent_run_id=parent_id)
        if trial.losses:
            client.log_batch(
                run_id,
                metrics=[
                    Metric("train/loss", v, 1_700_000_000_000 + s, s) for s, v in enumerate(trial.losses)
                ],
                synchronous=True,
            )
        if trial.metrics:
            assert log_metrics(uri, run_id, trial.metrics, step=0, spool_path=tmp / f"{trial_id}.spool")
        if trial.status != "RUNNING":
            set_status(uri, run_id, trial.status)
    spec = {"name": name, "axes": axes, "seeds": sorted({t.config["seed"] for t in trials})}
    if report_hints:
        spec["report"] = report_hints
    spec_path = tmp / f"{name}-spec" / "spec.yaml"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    csv_path = spec_path.parent / "trials.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["trial_id", "config_hash", "seed", "state", *axes])
        writer.writeheader()
        writer.writerows(rows)
    log_artifact(uri, parent_id, spec_path)
    log_artifact(uri, parent_id, csv_path)
    return parent_id


def metric_values(weights, seed, topk=8) -> dict[str, float]:
    """Distinct, known-in-advance metric values for a trial (not the report's numbers)."""
    code = int(weights[0]) * 4 + int(weights[1]) * 2 + int(weights[2])
    knn = 55.0 + 2.25 * code + 0.37 * seed + 0.01 * topk
    linear = 61.0 + 1.5 * code - 0.21 * seed + 0.02 * topk
    return {KNN: knn, LINEAR: linear, "eval/knn_top1_k20": knn - 0.5}


# ----------------------------------------------------------------------------- helpers
def report_args(sweep: str, out: Path, formats: str = ALL_FORMATS, **extra) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mugs-orch")
    add_report_parser(parser.add_subparsers(dest="command"))
    argv = ["report", sweep, "--format", formats, "--out", str(out)]
    for key, value in extra.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return parser.parse_args(argv)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def weights_key(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in json.loads(text))


def children(uri: str, parent_id: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    return list(
        client.search_runs(experiment_ids, f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=1000)
    )


def expected_stats(uri: str, parent_id: str, key_param: str, key=lambda s: s) -> dict:
    """Per setting of ``key_param``: finished values of KNN/LINEAR, from MLflow directly."""
    out: dict = {}
    for run in children(uri, parent_id):
        if run.info.status != "FINISHED":
            continue
        setting = key(run.data.params[key_param])
        for metric in (KNN, LINEAR):
            out.setdefault(setting, {}).setdefault(metric, []).append(run.data.metrics[metric])
    return out


def assert_self_contained_html(text: str) -> None:
    assert text.lstrip().lower().startswith("<!doctype html>")
    external = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, flags=re.IGNORECASE)
    assert not external, f"external references in the HTML: {external}"
    assert "<link" not in text.lower() and "<script" not in text.lower()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert images, "no embedded PNG"
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")


# ----------------------------------------------------------------------------- unit tests
def test_parse_value_yaml_safe() -> None:
    assert parse_value("[1.0, 0.0, 1.0]") == (1.0, 0.0, 1.0)
    assert parse_value("8") == 8 and isinstance(parse_value("8"), int)
    assert parse_value("0.0008") == pytest.approx(0.0008)
    assert parse_value("true") is True and parse_value("false") is False
    assert parse_value("null") is None
    assert parse_value("vit_small") == "vit_small"
    assert parse_value("on") == "on"  # not a YAML 1.1 boolean here
    assert parse_value("!!python/object:os.system ls") == "!!python/object:os.system ls"
    assert parse_value("[!!python/name:os.system x]") == "[!!python/name:os.system x]"  # safe_load refuses


def test_published_numbers_have_sources() -> None:
    published = load_published()
    by_key = {(e.method, e.arch, e.epochs): e for e in published.entries}
    expected = {
        ("vit_small", 100): (72.3, 76.4),
        ("vit_small", 300): (74.8, 78.2),
        ("vit_small", 800): (75.6, 78.9),
        ("vit_base", 400): (78.0, 80.6),
        ("vit_large", 250): (80.3, 82.1),
    }
    for (arch, epochs), (knn, linear) in expected.items():
        entry = by_key[("Mugs", arch, epochs)]
        assert entry.dataset == "imagenet"
        assert entry.value(KNN).value == knn and entry.value(LINEAR).value == linear
    for entry in published.entries:
        for value in entry.results.values():
            if value.value is not None:
                assert value.source is not None and value.source.url.startswith("https://")
                assert value.source.where
    for method in ("DINO", "MoCo-v3"):
        rows = [e for e in published.entries if e.method == method]
        assert rows and all(v.value is None for e in rows for v in e.results.values())


def test_published_number_without_source_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "published.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "sources": {},
                "entries": [{"method": "X", "results": {KNN: {"value": 70.0, "source": "nowhere"}}}],
            }
        )
    )
    with pytest.raises(PublishedDataError, match="no known source"):
        load_published(bad)


# ----------------------------------------------------------------------------- MLflow tests
@pytest.mark.mlflow
def test_loss_ablation_report(mlflow_server: str, tmp_path: Path) -> None:
    uri = mlflow_server
    name = f"ablation-{uuid.uuid4().hex[:8]}"
    combos = [w for w in itertools.product((0.0, 1.0), repeat=3) if any(w)]
    assert len(combos) == 7
    trials = []
    for i, w in enumerate(combos):
        for seed in (0, 1):
            losses = [3.0 - 0.1 * s - 0.05 * i for s in range(10)]
            trials.append(Trial(make_config(w, seed), "FINISHED", metric_values(w, seed), losses))
    trials.append(Trial(make_config((1, 0, 0), 2), "FAILED", {}))  # a third seed that failed
    trials.append(Trial(make_config((0, 1, 0), 2), None))  # a third seed never started
    parent_id = make_sweep(
        uri, tmp_path, name, [WEIGHTS], trials, report_hints={"rows": [WEIGHTS], "metrics": [KNN, LINEAR]}
    )
    out = tmp_path / "report"
    assert run_report(report_args(name, out), uri) == 0

    # one row per weight combination, n = finished seeds, statistics equal to MLflow's numbers
    rows = read_csv(out / "report.csv")
    assert len(rows) == 7
    by_weights = {weights_key(r[WEIGHTS]): r for r in rows}
    assert set(by_weights) == set(combos)
    expected = expected_stats(uri, parent_id, WEIGHTS, weights_key)
    for w, row in by_weights.items():
        assert int(row["n"]) == 2 == len(expected[w][KNN])
        for metric in (KNN, LINEAR):
            values = expected[w][metric]
            assert float(row[f"{metric}.mean"]) == pytest.approx(statistics.mean(values), abs=1e-9)
            assert float(row[f"{metric}.std"]) == pytest.approx(statistics.stdev(values), abs=1e-9)
            assert int(row[f"{metric}.n"]) == 2
    # failed and missing trials are listed, not dropped
    assert int(by_weights[(1.0, 0.0, 0.0)]["failed"]) == 1 and "FAILED" in by_weights[(1.0, 0.0, 0.0)]["note"]
    assert (
        int(by_weights[(0.0, 1.0, 0.0)]["missing"]) == 1 and "MISSING" in by_weights[(0.0, 1.0, 0.0)]["note"]
    )

    # best per column: the largest mean, recomputed here
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    tex = (out / "report.tex").read_text()
    for metric in (KNN, LINEAR):
        means = {w: statistics.mean(v[metric]) for w, v in expected.items()}
        best = max(means, key=means.get)
        flagged = [w for w, r in by_weights.items() if r[f"{metric}.best"] == "True"]
        assert flagged == [best]
        best_text = f"{means[best]:.2f} \u00b1 {statistics.stdev(expected[best][metric]):.2f}"
        assert f"**{best_text}**" in md
        assert f"<strong>{best_text}</strong>" in html
        assert "\\textbf{" + best_text.replace("\u00b1", "$\\pm$") + "}" in tex
    # paper layout: check marks for the three losses, FAILED/MISSING visible
    header = next(line for line in md.splitlines() if line.startswith("| IDS"))
    assert header.startswith("| IDS | LGDS | GDS | k-NN top-1 | linear top-1 | n |")
    assert md.count("\u2713") >= 12 and md.count("\u2717") >= 9
    assert "1 FAILED" in md and "1 MISSING" in md
    assert "INCOMPLETE" in md and "PARTIAL" not in md
    for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\begin{tabular}"):
        assert rule in tex
    assert "$\\checkmark$" in tex
    assert_self_contained_html(html)
    assert "no published setting matches" in md  # vit_tiny on digits

    meta = json.loads((out / "report.json").read_text())
    assert "metric_by_setting.png" in " ".join(meta["files"]) and "training_curves.png" in " ".join(
        meta["files"]
    )
    # the report is logged under the parent run's report/
    client = MlflowClient(tracking_uri=uri)
    logged = {Path(f.path).name for f in client.list_artifacts(parent_id, "report")}
    assert {"report.md", "report.tex", "report.csv", "report.html", "report.json", "plots"} <= logged
    plots = {Path(f.path).name for f in client.list_artifacts(parent_id, "report/plots")}
    assert "training_curves.png" in plots


@pytest.mark.mlflow
def test_partial_sweep_with_running_failed_and_missing(mlflow_server: str, tmp_path: Path) -> None:
    uri = mlflow_server
    name = f"topk-{uuid.uuid4().hex[:8]}"
    w = (1.0, 1.0, 1.0)
    trials = [
        Trial(make_config(w, 0, topk=4), "FINISHED", metric_values(w, 0, 4), [2.0, 1.5, 1.2]),
        Trial(make_config(w, 1, topk=4), "FINISHED", metric_values(w, 1, 4), [2.1, 1.6, 1.1]),
        Trial(make_config(w, 0, topk=8), "FINISHED", metric_values(w, 0, 8), [2.0, 1.4]),
        Trial(make_config(w, 1, topk=8), "RUNNING", {}, [2.2]),
        Trial(make_config(w, 0, topk=16), "FAILED"),
        Trial(make_config(w, 0, topk=32), None),
    ]
    parent_id = make_sweep(uri, tmp_path, name, [TOPK], trials, state="running")
    out = tmp_path / "report"
    assert run_report(report_args(name, out), uri) == 0

    rows = {int(r[TOPK]): r for r in read_csv(out / "report.csv")}
    assert sorted(rows) == [4, 8, 16, 32]
    assert [int(rows[k]["n"]) for k in (4, 8, 16, 32)] == [2, 1, 0, 0]
    assert rows[8]["running"] == "1" and rows[16]["status"] == "FAILED" and rows[32]["status"] == "MISSING"
    assert rows[16][f"{KNN}.mean"] == "" and rows[32][f"{LINEAR}.mean"] == ""
    expected = expected_stats(uri, parent_id, TOPK, int)
    assert float(rows[8][f"{KNN}.mean"]) == pytest.approx(expected[8][KNN][0], abs=1e-9)
    assert rows[8][f"{KNN}.std"] == ""  # one finished seed: no std

    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "PARTIAL RESULTS" in md.split("## Results")[0]
    assert 'class="banner partial"' in html and "PARTIAL RESULTS" in html
    assert "PARTIAL RESULTS" in (out / "report.tex").read_text()
    result_rows = [line for line in md.splitlines() if line.startswith("| 16 ") or line.startswith("| 32 ")]
    assert "FAILED" in result_rows[0] and "MISSING" in result_rows[1]
    meta = json.loads((out / "report.json").read_text())
    assert meta["partial"] is True
    assert any(f.endswith("metric_vs_method_topk.png") for f in meta["files"])
    assert_self_contained_html(html)


@pytest.mark.mlflow
def test_published_vs_reproduced(mlflow_server: str, tmp_path: Path) -> None:
    uri = mlflow_server
    name = f"paper-{uuid.uuid4().hex[:8]}"
    trials = []
    for seed, (knn, linear) in enumerate([(71.9, 76.0), (72.05, 76.6), (71.7, 75.9)]):
        config = make_config((1, 1, 1), seed, arch="vit_small", epochs=100, dataset="imagefolder")
        trials.append(Trial(config, "FINISHED", {KNN: knn, LINEAR: linear}))
    parent_id = make_sweep(uri, tmp_path, name, [], trials)  # seeds only: one row
    out = tmp_path / "report"
    assert run_report(report_args(name, out), uri) == 0

    finished = [r for r in children(uri, parent_id) if r.info.status == "FINISHED"]
    knn_mean = statistics.mean(r.data.metrics[KNN] for r in finished)
    linear_mean = statistics.mean(r.data.metrics[LINEAR] for r in finished)
    (row,) = read_csv(out / "report.csv")
    assert float(row[f"published.{KNN}"]) == 72.3 and float(row[f"published.{LINEAR}"]) == 76.4
    assert float(row[f"gap.{KNN}"]) == pytest.approx(knn_mean - 72.3, abs=1e-9)
    assert float(row[f"gap.{LINEAR}"]) == pytest.approx(linear_mean - 76.4, abs=1e-9)
    md = (out / "report.md").read_text()
    section = md.split("## Published vs reproduced", 1)[1]
    assert "72.3" in section and "76.4" in section
    assert f"{knn_mean - 72.3:+.2f}" in section and f"{linear_mean - 76.4:+.2f}" in section
    assert "sail-sg/mugs" in section  # the source is named
    assert "no verified source" in section  # DINO / MoCo-v3 rows stay empty
    html = (out / "report.html").read_text()
    assert "72.3" in html and "no verified source" in html
    assert_self_contained_html(html)


@pytest.mark.mlflow
def test_weight_simplex_heat_map(mlflow_server: str, tmp_path: Path) -> None:
    uri = mlflow_server
    name = f"simplex-{uuid.uuid4().hex[:8]}"
    grid = [
        (1.0, 0.0, 0.0),
        (0.0, 1.0, 0.0),
        (0.0, 0.0, 1.0),
        (0.5, 0.5, 0.0),
        (0.5, 0.25, 0.25),
        (1.0, 1.0, 1.0),
    ]
    trials = [
        Trial(make_config(w, 0), "FINISHED", {KNN: 50 + 10 * w[0] + 5 * w[1], LINEAR: 60 + 8 * w[2]})
        for w in grid
    ]
    make_sweep(uri, tmp_path, name, [WEIGHTS], trials)
    out = tmp_path / "report"
    assert run_report(report_args(name, out, formats="html,csv"), uri) == 0
    meta = json.loads((out / "report.json").read_text())
    assert meta["formats"] == ["html", "csv"]
    html = (out / "report.html").read_text()
    assert "Loss-weight simplex" in html and "weights (IDS / LGDS / GDS)" in html
    assert "0.5 / 0.25 / 0.25" in html
    assert_self_contained_html(html)
    assert not (out / "report.md").exists()


@pytest.mark.mlflow
def test_unknown_sweep_exits_2(mlflow_server: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    get_or_create_experiment(mlflow_server, "reports-empty")
    code = run_report(report_args(f"no-such-{uuid.uuid4().hex[:6]}", tmp_path / "r"), mlflow_server)
    assert code == 2
    assert "no sweep named" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_bad_format_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = run_report(
        report_args("whatever", tmp_path / "r", formats="md,pdf"), f"sqlite:///{tmp_path}/unused.db"
    )
    assert code == 2
    assert "pdf" in capsys.readouterr().err


def test_sql_fast_path_matches_search_runs(tmp_path: Path) -> None:
    """On a sqlite store the report reads runs with plain SQL; the frame equals search_runs'."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    name = "fast-path"
    trials = [
        Trial(make_config(w, seed), "FINISHED", metric_values(w, seed), [2.0, 1.0])
        for w in ((1, 1, 1), (1, 0, 1))
        for seed in (0, 1)
    ]
    trials += [Trial(make_config((0, 1, 1), 0), "FAILED"), Trial(make_config((0, 1, 1), 1), "RUNNING")]
    trials.append(Trial(make_config((0, 0, 1), 0), None))
    make_sweep(uri, tmp_path, name, [WEIGHTS], trials)
    fast = fetch_sweep(uri, name, fast_path=True)
    slow = fetch_sweep(uri, name, fast_path=False)
    assert (fast.fetch_method, slow.fetch_method) == ("sql", "api"), fast.notes
    assert len(fast.runs) == 6

    def canon(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.sort_values("run_id").reset_index(drop=True)[sorted(frame.columns)]

    pd.testing.assert_frame_equal(canon(fast.runs), canon(slow.runs), check_dtype=False)
    run_ids = list(fast.runs["run_id"])
    sql_hist = fetch_histories(uri, run_ids, "train/loss", fast_path=True)
    api_hist = fetch_histories(uri, run_ids, "train/loss", fast_path=False)
    assert sql_hist.keys() == api_hist.keys() and len(sql_hist) == 4  # finished runs logged a loss
    for run_id, history in api_hist.items():
        pd.testing.assert_frame_equal(sql_hist[run_id], history.reset_index(drop=True), check_dtype=False)
    out_fast, out_slow = tmp_path / "fast", tmp_path / "slow"
    build_report(uri, name, out_fast, formats=["csv"], fast_path=True)
    build_report(uri, name, out_slow, formats=["csv"], fast_path=False)
    assert (out_fast / "report.csv").read_text() == (out_slow / "report.csv").read_text()


def test_cmd_report_resolves_uri_and_default_out_dir(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from reports.cli import cmd_report

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    trials = [
        Trial(make_config((1, 1, 1), seed), "FINISHED", metric_values((1, 1, 1), seed)) for seed in (0, 1)
    ]
    parent_id = make_sweep(uri, tmp_path, "cli/sweep one", [], trials)
    parser = argparse.ArgumentParser(prog="mugs-orch")
    parser.add_argument("--tracking-uri")
    parser.add_argument("--workdir", default="runs")
    add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["--tracking-uri", uri, "report", "cli/sweep one", "--workdir", str(tmp_path / "w")]
    )
    assert cmd_report(args) == 0
    out = tmp_path / "w" / "reports" / "cli_sweep_one"
    assert {p.name for p in out.iterdir()} >= {
        "report.md",
        "report.tex",
        "report.csv",
        "report.html",
        "report.json",
    }
    assert str(out / "report.md") in capsys.readouterr().out
    logged = {Path(f.path).name for f in MlflowClient(tracking_uri=uri).list_artifacts(parent_id, "report")}
    assert "report.html" in logged
