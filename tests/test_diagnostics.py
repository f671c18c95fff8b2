"""Collapse diagnostics: the statistics against hand computations, the verdict on constant and
random batches, the trainer logging them on logged steps only (enabled branches only, numerics
unchanged), and the flag in ``mugs-orch status``, the sweep summary and the report's figure."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mugs import diagnostics as diag
from mugs.callbacks import JsonlMetrics
from mugs.diagnostics import (
    BRANCHES,
    assignment_entropies,
    branch_kinds,
    collapse_label,
    collapsed_branches,
    diag_key,
    group_diagnostics,
    logit_gap,
    mean_pairwise_cosine,
    target_diagnostics,
    target_std,
)
from mugs.engine import Trainer
from mugs.losses.infonce import InfoNCEQueueLoss
from tests.helpers import demo_config, real_batch


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _batch_metrics(targets: torch.Tensor, logits: torch.Tensor, student: torch.Tensor) -> dict[str, float]:
    """The logged diagnostics of all three branches for one batch (two views: the same tensors)."""
    queue = F.normalize(_randn(targets.shape[1], 256, seed=9), dim=0)
    out: dict[str, float] = {}
    for branch in ("instance", "local_group"):
        values = target_diagnostics([targets, targets])
        values["logit_gap"] = logit_gap(student, targets, queue, 0.2)
        out.update({diag_key(branch, k): v.item() for k, v in values.items()})
    grp = group_diagnostics([logits, logits], torch.zeros(1, logits.shape[1]), 0.04)
    out.update({diag_key("group", k): v.item() for k, v in grp.items()})
    return out


# ----------------------------------------------------------------------------- statistics
def test_constant_batch_reads_collapsed() -> None:
    n, d, p = 64, 64, 512
    target = _randn(1, d, seed=1).expand(n, d)
    logits = _randn(1, p, seed=2).expand(n, p)
    assert target_std(target).item() < 1e-6
    assert mean_pairwise_cosine(target).item() == pytest.approx(1.0, abs=1e-5)
    batch, sample = assignment_entropies(logits, torch.zeros(1, p), 0.04).tolist()
    assert batch == pytest.approx(sample, abs=1e-4)  # one assignment for all: no information
    metrics = _batch_metrics(target, logits, F.normalize(_randn(n, d, seed=3), dim=-1))
    assert collapsed_branches(metrics) == ["instance", "local_group", "group"]
    # all-zero targets: the cosine reads 0, the std catches it
    zeros = torch.zeros(n, d)
    assert mean_pairwise_cosine(zeros).item() == 0.0
    assert collapsed_branches({diag_key("instance", "target_std"): target_std(zeros).item()}) == ["instance"]


def test_random_batch_reads_healthy() -> None:
    n, d, p = 512, 64, 512
    targets = _randn(n, d, seed=4)
    assert target_std(targets).item() == pytest.approx(1 / math.sqrt(d), rel=0.05)
    assert abs(mean_pairwise_cosine(targets).item()) < 0.01
    logits = _randn(n, p, seed=5)
    batch, sample = assignment_entropies(logits, torch.zeros(1, p), 0.04).tolist()
    assert 0.0 <= sample < batch <= math.log(p) + 1e-5
    assert batch - sample > 1.0  # sharp, spread assignments carry information
    metrics = _batch_metrics(targets, logits, F.normalize(_randn(n, d, seed=6), dim=-1))
    assert collapsed_branches(metrics) == []


def test_pairwise_cosine_equals_the_explicit_mean() -> None:
    t = _randn(7, 5, seed=7)
    z = F.normalize(t, dim=-1)
    want = sum(float(z[i] @ z[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    assert mean_pairwise_cosine(t).item() == pytest.approx(want, abs=1e-6)


def test_logit_gap_by_hand_and_as_the_infonce_logits() -> None:
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    negatives = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # [d, K]: columns b1 = (0, 1), b2 = (-1, 0)
    tau = 0.5
    # row 1: s.t = 0.6, s.b = (0, -1) -> 0.6/0.5 - (-0.5)/0.5 = 2.2; row 2: 0 - 0.5/0.5 = -1
    assert logit_gap(s, t, negatives, tau).item() == pytest.approx((2.2 - 1.0) / 2)
    # one negative, one sample: InfoNCE = log(1 + exp(neg - pos)) = softplus(-gap)
    loss = InfoNCEQueueLoss(2, 1, tau)
    for i in range(2):
        for k in range(2):
            gap = logit_gap(s[i : i + 1], t[i : i + 1], negatives[:, k : k + 1], tau)
            got = loss.pair_loss(s[i : i + 1], t[i : i + 1], negatives[:, k : k + 1])
            assert got.item() == pytest.approx(F.softplus(-gap).item(), abs=1e-6)


def test_assignment_entropies_by_hand() -> None:
    # tau 1, centre (1, 1): rows (ln3 + 1, 1) and (1, ln3 + 1) -> (3/4, 1/4) and (1/4, 3/4)
    ln3 = math.log(3)
    logits = torch.tensor([[ln3 + 1, 1.0], [1.0, ln3 + 1]])
    batch, sample = assignment_entropies(logits, torch.ones(1, 2), 1.0).tolist()
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert sample == pytest.approx(h, abs=1e-6)
    assert batch == pytest.approx(math.log(2), abs=1e-6)  # the batch mean is (1/2, 1/2)
    # uniform assignments: both ln K
    uniform = assignment_entropies(torch.full((3, 5), 2.0), torch.zeros(1, 5), 0.04).tolist()
    assert uniform == pytest.approx([math.log(5), math.log(5)], abs=1e-6)


def test_verdict_needs_both_high_cosine_and_no_gap() -> None:
    def inst(cos: float, gap: float) -> dict[str, float]:
        return {diag_key("instance", "target_cos"): cos, diag_key("instance", "logit_gap"): gap}

    assert collapsed_branches(inst(0.8, 0.0)) == []  # an untrained student: no gap yet, diverse targets
    assert collapsed_branches(inst(0.96, 1.2)) == []  # similar targets, yet the positive stands out
    assert collapsed_branches(inst(0.95, 0.01)) == ["instance"]  # the loss sits at ln(K + 1)
    assert collapsed_branches(inst(0.995, 1.0)) == ["instance"]  # targets one vector
    assert collapsed_branches(inst(math.nan, math.nan)) == []
    assert collapsed_branches({"loss": 1.0}) == []
    assert collapse_label(["instance", "group"]) == "COLLAPSED (instance, group)"
    assert collapse_label([]) == ""


# ----------------------------------------------------------------------------- trainer
def _expected_keys(weights: list[int]) -> set[str]:
    return {diag_key(b, k) for b, w in zip(BRANCHES, weights, strict=True) if w for k in branch_kinds(b)}


@pytest.mark.parametrize("weights", [[1, 1, 1], [1, 0, 0]])
def test_trainer_logs_diagnostics_of_enabled_branches_on_logged_steps(weights, tmp_path, monkeypatch):
    calls: list[tuple[str, int]] = []  # (function, trainer step when called)
    trainer: list[Trainer] = []
    for name in ("target_diagnostics", "group_diagnostics"):
        real = getattr(diag, name)

        def spy(*args, _real=real, _name=name):
            calls.append((_name, trainer[0].step))
            return _real(*args)

        monkeypatch.setattr(diag, name, spy)
    cfg = demo_config(
        f"method.loss_weights={weights}", "train.max_steps=3", "train.log_every=2", "data.subset=256"
    )
    tr = Trainer(cfg, tmp_path, callbacks=[JsonlMetrics(tmp_path / "metrics.jsonl")])
    trainer.append(tr)
    assert tr.fit() == "completed"
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3]  # every 2nd step and the last
    want = _expected_keys(weights)
    for r in rows:
        assert {k for k in r if k.startswith("diag/")} == want
        assert all(math.isfinite(r[k]) for k in want)
        assert -1.0 <= r[diag_key("instance" if weights[0] else "local_group", "target_cos")] <= 1.0
    # computed during the logged steps 2 and 3 only (trainer.step 1 and 2 while they run)
    n_group = int(weights[2] > 0)
    for step in (1, 2):
        names = sorted(n for n, s in calls if s == step)
        assert names == ["group_diagnostics"] * n_group + ["target_diagnostics"] * sum(map(bool, weights))
    assert {s for _, s in calls} == {1, 2}


def test_diagnostics_change_no_numerics(tmp_path):
    cfg = demo_config("train.clip_grad=0")
    batches = [real_batch(cfg, 8, seed=s) for s in range(3)]

    def run(diagnose: bool, out: Path):
        tr = Trainer(cfg, out, iters_per_epoch=10)
        metrics = [tr.train_step(crops, weak, diagnose=diagnose) for crops, weak in batches]
        return tr, metrics, torch.get_rng_state()

    a, ma, rng_a = run(True, tmp_path / "a")
    b, mb, rng_b = run(False, tmp_path / "b")
    assert all(k.startswith("diag/") for m in ma for k in set(m) - set(mb[0]))
    assert not any(k.startswith("diag/") for m in mb for k in m)
    assert [m["loss"] for m in ma] == [m["loss"] for m in mb]
    assert torch.equal(rng_a, rng_b), "diagnostics consumed random numbers"
    for sa, sb in ((a.student, b.student), (a.teacher, b.teacher), (a.loss, b.loss)):
        da, db = sa.state_dict(), sb.state_dict()
        assert da.keys() == db.keys()
        assert all(torch.equal(da[k], db[k]) for k in da), type(sa).__name__


def test_diag_keys_reach_mlflow_and_the_report_figure(tmp_path):
    from orchestration.tracking import create_run, get_or_create_experiment
    from orchestration.tracking.logger import MlflowMetricsCallback
    from reports.fetch import fetch_histories
    from reports.plots import plot_diagnostics
    from reports.report import DIAG_CURVE_KEYS, TRAIN_PREFIX

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = create_run(uri, get_or_create_experiment(uri, "diag"), "t", {}, {})
    cb = MlflowMetricsCallback(uri, run_id, tmp_path / "spool.jsonl", flush_interval_s=0.2)
    cfg = demo_config(
        "method.loss_weights=[1,0,1]", "train.max_steps=2", "train.log_every=1", "data.subset=256"
    )
    assert Trainer(cfg, tmp_path / "out", callbacks=[cb]).fit() == "completed"
    assert not (tmp_path / "spool.jsonl").exists(), "metrics were spooled, not delivered"
    want = _expected_keys([1, 0, 1])
    assert want <= set(DIAG_CURVE_KEYS)
    curves = {}
    for key in DIAG_CURVE_KEYS:
        hist = fetch_histories(uri, [run_id], TRAIN_PREFIX + key)
        assert (key in want) == (run_id in hist), key
        if run_id in hist:
            assert list(hist[run_id]["step"]) == [1, 2]
            curves[key] = {"setting": [hist[run_id]]}
    plot = plot_diagnostics(curves)
    assert plot is not None and plot.png.startswith(b"\x89PNG")
    assert plot_diagnostics({}) is None


# ----------------------------------------------------------------------------- orchestration
def _trial(root: Path, name: str, metrics: dict[str, float]) -> Path:
    from orchestration.trial import TrialSpec

    d = root / "trials" / name
    d.mkdir(parents=True)
    TrialSpec(trial_id=name, trial_dir=str(d), config={"seed": 0}).save()
    older = {k: 0.0 for k in metrics}  # an earlier step: only the latest counts
    lines = [json.dumps({"step": 5, **older}), json.dumps({"step": 10, **metrics}), '{"step": 11, "lo']
    (d / "metrics.jsonl").write_text("\n".join(lines))
    return d


def test_status_and_sweep_summary_flag_a_collapsed_trial(tmp_path, capsys):
    from orchestration.cli import cmd_status
    from orchestration.status import trial_status
    from orchestration.sweeps.summary import summarize
    from orchestration.sweeps.trial_state import collapsed

    d, p = 64, 512
    bad = _batch_metrics(
        _randn(1, d, seed=1).expand(64, d),
        _randn(1, p, seed=2).expand(64, p),
        F.normalize(_randn(64, d, seed=3), dim=-1),
    )
    bad = {k: v for k, v in bad.items() if not k.startswith("diag/local_group/")}  # LGDS off
    good = _batch_metrics(
        _randn(64, d, seed=4), _randn(64, p, seed=5), F.normalize(_randn(64, d, seed=6), dim=-1)
    )
    sick, fine = _trial(tmp_path, "sick", bad), _trial(tmp_path, "fine", good)

    assert collapsed(sick) == ["instance", "group"] and collapsed(fine) == []
    assert trial_status(sick)["collapse"] == "COLLAPSED (instance, group)"
    assert trial_status(fine)["collapse"] == ""
    assert cmd_status(argparse.Namespace(workdir=str(tmp_path), trial=None)) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    assert lines["sick"].endswith("COLLAPSED (instance, group)")
    assert "COLLAPSED" not in lines["fine"]

    rows = [
        {"trial_id": t.name, "seed": 0, "state": "done", "collapsed": ",".join(collapsed(t))}
        for t in (sick, fine)
    ]
    summarize("s", rows, "eval/knn_top1", True)
    out = capsys.readouterr().out
    assert "sick: COLLAPSED (instance, group)" in out and "fine:" not in out


def test_report_plots_the_diagnostics_of_the_curve_runs(tmp_path):
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from reports.report import DIAG_CURVE_KEYS, TRAIN_PREFIX, build_report
    from tests.test_reports import Trial, make_config, make_sweep, metric_values

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    trials = [
        Trial(
            make_config((1, 0, 1), seed), "FINISHED", metric_values((1, 0, 1), seed), losses=[7.0, 6.5, 6.0]
        )
        for seed in (0, 1)
    ]
    make_sweep(uri, tmp_path, "diag", [], trials)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs(client.get_experiment_by_name("reports-diag").experiment_id)
    children = [r.info.run_id for r in runs if r.data.tags.get("mugs.role") == "trial"]
    assert len(children) == 2
    keys = [k for k in DIAG_CURVE_KEYS if not k.startswith("diag/local_group/")]
    for run_id in children:
        metrics = [Metric(TRAIN_PREFIX + k, 0.5, 1_700_000_000_000 + s, s) for k in keys for s in range(3)]
        client.log_batch(run_id, metrics=metrics, synchronous=True)
    out = tmp_path / "report"
    build_report(uri, "diag", out, formats=["md"], log_artifacts=False)
    assert (out / "plots" / "collapse_diagnostics.png").read_bytes().startswith(b"\x89PNG")
    assert "collapse_diagnostics.png" in (out / "report.md").read_text()
