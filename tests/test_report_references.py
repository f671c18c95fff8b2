"""Reference rows (untrained network, raw pixels) and noise-aware tables in sweep reports.

Report tests write sweeps to a real MLflow sqlite store with the builder of ``test_reports``
plus reference runs tagged like the sweep driver tags them; expected numbers (means, gains,
Welch's t, its degrees of freedom) are computed here by hand with the standard library, the
p-value from the t distribution (``scipy.stats.t.sf``), never from the report code. The
reference trial itself runs through the real pretrain and eval jobs on scikit-learn's digits.
"""

from __future__ import annotations

import csv
import math
import statistics
from html import unescape
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from scipy import stats

from mugs.config import build_config
from mugs.data.datasets import load_split
from mugs.data.transforms import eval_transform
from mugs.eval.pixels import flat_pixels, pixel_knn
from orchestration.reference import REFERENCE_TAG, UNTRAINED
from orchestration.tracking import create_run, flatten_config, log_metrics, set_status
from reports.noise import welch
from reports.report import build_report
from tests.test_reports import KNN, WEIGHTS, Trial, make_config, make_sweep

PIXELS_KNN = "eval/pixels/knn_top1"
FULL, IDS_ONLY, NO_IDS = (1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 1.0)
UNTRAINED_KNN = [40.0, 42.0, 41.0]
PIXEL_KNN = [90.0, 90.0, 90.0]


# ----------------------------------------------------------------------------- helpers
def hand_welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Welch's t, Welch-Satterthwaite df and the two-sided p, written out."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return t, df, float(2 * stats.t.sf(abs(t), df))


def add_references(uri: str, tmp: Path, parent_id: str, knn: list[float], pixels: list[float] | None) -> None:
    """Reference runs as the driver creates them: child runs tagged mugs.reference=untrained."""
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_run(parent_id).info.experiment_id
    for seed, value in enumerate(knn):
        flat = flatten_config(make_config(FULL, seed))
        tags = {"mugs.role": "trial", "mugs.trial_id": f"ref-{seed}", REFERENCE_TAG: UNTRAINED}
        run_id = create_run(uri, experiment_id, f"ref-{seed}", flat, tags, parent_run_id=parent_id)
        metrics = {KNN: value} | ({PIXELS_KNN: pixels[seed]} if pixels else {})
        assert log_metrics(uri, run_id, metrics, step=0, spool_path=tmp / f"ref-{seed}.spool")
        set_status(uri, run_id, "FINISHED")


def sweep_with(uri: str, tmp: Path, name: str, values: dict[tuple, list[float]]) -> str:
    trials = [
        Trial(make_config(w, seed), "FINISHED", {KNN: v})
        for w, vs in values.items()
        for seed, v in enumerate(vs)
    ]
    return make_sweep(uri, tmp, name, [WEIGHTS], trials, report_hints={"rows": [WEIGHTS], "metrics": [KNN]})


def csv_rows(out: Path) -> list[dict[str, str]]:
    with (out / "report.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def by_weights(rows: list[dict[str, str]]) -> dict[tuple, dict[str, str]]:
    import json

    return {tuple(float(x) for x in json.loads(r[WEIGHTS])): r for r in rows if not r["reference"]}


# ----------------------------------------------------------------------------- units
def test_welch_matches_the_hand_computed_statistic() -> None:
    a, b = [80.0, 80.6, 81.1, 79.9], [70.2, 71.5, 69.8]
    t, df, p = hand_welch(a, b)
    got = welch(a, b)
    assert got is not None
    assert got.t == pytest.approx(t, rel=1e-12) and got.df == pytest.approx(df, rel=1e-12)
    assert got.p == pytest.approx(p, rel=1e-9)
    assert welch([1.0], [2.0, 3.0]) is None  # one seed: no test
    assert welch([2.0, 2.0], [2.0, 2.0]).p == 1.0 and welch([3.0, 3.0], [2.0, 2.0]).p == 0.0


def test_pixel_knn_is_the_cosine_knn_of_centred_pixels() -> None:
    """On real digits: the protocol equals a plain numpy weighted kNN written out here."""
    cfg = build_config("demo")
    tf = eval_transform(cfg.data.image_size)
    xtr, ytr = flat_pixels(load_split(cfg.data, "train", tf))
    xte, yte = flat_pixels(load_split(cfg.data, "test", tf))
    ks, temp = cfg.eval.knn_k, cfg.eval.knn_temperature
    got = pixel_knn(xtr, ytr, xte, yte, ks, temp)
    a, b = xtr.double().numpy(), xte.double().numpy()
    mu = a.mean(0)
    a, b = a - mu, b - mu
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    sim = b @ a.T
    order = np.argsort(-sim, axis=1)
    for k in ks:
        idx = order[:, :k]
        weights = np.exp(np.take_along_axis(sim, idx, 1) / temp)
        votes = np.zeros((len(b), 10))
        for c in range(10):
            votes[:, c] = (weights * (ytr.numpy()[idx] == c)).sum(1)
        expected = 100.0 * float((votes.argmax(1) == yte.numpy()).mean())
        assert got[k] == pytest.approx(expected, abs=100.0 / len(b) + 1e-9), k
    assert got[20] > 90.0  # raw pixels are a strong baseline on digits


def test_reference_plans_and_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from orchestration.sweeps.driver import SweepRequest, expand, prepare_spec, run_sweep
    from orchestration.sweeps.expand import reference_plans

    spec_path = str(Path(__file__).resolve().parents[1] / "sweeps" / "loss_weights.yaml")
    req = SweepRequest(spec_path=spec_path, workdir=tmp_path / "w", dry_run=True)
    spec, extra = prepare_spec(req)
    plans, refs = expand(spec, extra, spec_path), reference_plans(spec, extra)
    assert [r.seed for r in refs] == spec.seeds and all(r.reference == UNTRAINED for r in refs)
    ref = refs[0]
    assert ref.config.method.loss_weights == build_config("demo").method.loss_weights  # the preset's value
    assert ref.config.model == plans[0].config.model and ref.config.seed == plans[0].seed
    assert ref.evals == ["knn", "pixels"]
    full = next(p for p in plans if list(p.config.method.loss_weights) == [1, 1, 1])
    assert full.config.to_dict() == ref.config.to_dict()  # the same config ...
    assert ref.config_hash != full.config_hash and ref.trial_id not in {
        p.trial_id for p in plans
    }  # ... not the same trial
    assert run_sweep(req) == 0
    out = capsys.readouterr().out
    assert f"reference trials: {len(spec.seeds)}" in out and ref.trial_id in out
    assert "reference: untrained network; reference: raw pixels" in out
    assert not (tmp_path / "w" / "trials").exists()


def test_reference_trial_jobs_on_digits(tmp_path: Path) -> None:
    """The real jobs: 0 steps, the initial backbone of a trial of the same seed, pixels beat it."""
    from mugs import checkpoint as ckpt
    from mugs.engine import Trainer
    from orchestration.jobs import EvalTask, PretrainTask
    from orchestration.sweeps.trial_state import results
    from orchestration.trial import TrialSpec

    cfg = build_config("demo", {"seed": 3})
    spec = TrialSpec("ref", str(tmp_path / "ref"), cfg.to_dict(), ["knn", "pixels"], reference=UNTRAINED)
    spec.dir.mkdir()
    spec.save()
    assert PretrainTask(spec)()["step"] == 0
    assert (spec.dir / "PRETRAINED").read_text().strip() == "0"
    for protocol in spec.evals:
        EvalTask(spec, protocol)()
    got = results(spec.dir)
    assert got[PIXELS_KNN] > got[KNN], got  # raw pixels beat the untrained network on digits
    assert got[KNN] > 10.0 + 5.0  # the untrained network is above chance (10 classes) ...
    assert got[KNN] < 100.0
    state = ckpt.load(spec.checkpoint)
    trial_cfg = build_config("demo", {"seed": 3, "method": {"loss_weights": [1.0, 0.0, 0.0]}})
    trial = Trainer(trial_cfg, tmp_path / "trial")
    initial = trial.student.backbone.state_dict()
    saved = {k[len("backbone.") :]: v for k, v in state["teacher"].items() if k.startswith("backbone.")}
    assert saved.keys() == initial.keys()
    assert all(torch.equal(saved[k], initial[k]) for k in initial), "not the trial's initial backbone"


# ----------------------------------------------------------------------------- reports
def test_reference_rows_gains_and_noise_marks(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    values = {
        FULL: [80.0, 80.6, 81.1],
        IDS_ONLY: [70.2, 71.5, 69.8],  # well below full Mugs: significant
        NO_IDS: [80.9, 79.2, 81.4],  # overlapping with full Mugs: within noise
    }
    parent_id = sweep_with(uri, tmp_path, "refs", values)
    add_references(uri, tmp_path, parent_id, UNTRAINED_KNN, PIXEL_KNN)
    out = tmp_path / "report"
    build_report(uri, "refs", out, log_artifacts=False)

    rows = csv_rows(out)
    assert [r["reference"] for r in rows[:2]] == ["untrained", "pixels"]  # the reference block on top
    untrained_mean = statistics.fmean(UNTRAINED_KNN)
    assert float(rows[0][f"{KNN}.mean"]) == pytest.approx(untrained_mean)
    assert float(rows[1][f"{KNN}.mean"]) == pytest.approx(90.0)
    assert float(rows[1][f"{KNN}.gain_vs_untrained"]) == pytest.approx(90.0 - untrained_mean)
    settings = by_weights(rows)
    for w, vs in values.items():
        gain = statistics.fmean(vs) - untrained_mean
        assert float(settings[w][f"{KNN}.gain_vs_untrained"]) == pytest.approx(gain, abs=1e-9)
        assert int(settings[w]["n"]) == 3
    assert settings[FULL][f"{KNN}.noise"] == "comparison"
    for w, verdict in ((IDS_ONLY, "significant"), (NO_IDS, "within noise")):
        t, df, p = hand_welch(values[w], values[FULL])
        row = settings[w]
        assert row[f"{KNN}.noise"] == verdict
        assert float(row[f"{KNN}.vs_comparison.t"]) == pytest.approx(t, rel=1e-9)
        assert float(row[f"{KNN}.vs_comparison.df"]) == pytest.approx(df, rel=1e-9)
        assert float(row[f"{KNN}.vs_comparison.p"]) == pytest.approx(p, rel=1e-6)
        assert (p < 0.05) == (verdict == "significant")

    md, html = (out / "report.md").read_text(), unescape((out / "report.html").read_text())
    tex = (out / "report.tex").read_text()
    for text in (md, html, tex):
        assert "reference: untrained network" in text and "reference: raw pixels" in text
        assert "Welch's t-test" in text and "within noise" in text and "significant" in text
    assert "\u0394 vs untrained" in md and "\u0394 vs full Mugs" in md and "$\\Delta$ vs untrained" in tex
    gain_ids = statistics.fmean(values[IDS_ONLY]) - untrained_mean
    assert f"{gain_ids:+.2f}" in md and f"{gain_ids:+.2f}" in html and f"{gain_ids:+.2f}" in tex
    t, df, p = hand_welch(values[IDS_ONLY], values[FULL])
    delta = statistics.fmean(values[IDS_ONLY]) - statistics.fmean(values[FULL])
    p_text = "p<0.001" if p < 0.001 else f"p={p:.3g}"
    assert f"{delta:+.2f}, {p_text}: significant" in md
    t, df, p = hand_welch(values[NO_IDS], values[FULL])
    delta = statistics.fmean(values[NO_IDS]) - statistics.fmean(values[FULL])
    assert f"{delta:+.2f}, p={p:.3g}: within noise" in md
    assert '<tr class="reference">' in html and 'class="reference reference-last"' in html
    assert "one seed" not in md  # three seeds everywhere: every row was tested
    results_tex = tex.split("\\begin{tabular}", 1)[1].split("\\end{tabular}", 1)[0]
    assert results_tex.count("\\midrule") == 2  # under the header and under the reference block


def test_one_seed_cannot_be_tested(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent_id = sweep_with(uri, tmp_path, "one-seed", {FULL: [80.0], IDS_ONLY: [60.0], NO_IDS: [79.0]})
    add_references(uri, tmp_path, parent_id, UNTRAINED_KNN[:1], None)
    out = tmp_path / "report"
    build_report(uri, "one-seed", out, formats=["md", "csv"], log_artifacts=False)
    settings = by_weights(csv_rows(out))
    assert [settings[w][f"{KNN}.noise"] for w in (FULL, IDS_ONLY, NO_IDS)] == [
        "comparison",
        "untestable",
        "untestable",
    ]
    assert settings[IDS_ONLY][f"{KNN}.vs_comparison.p"] == ""
    md = (out / "report.md").read_text()
    assert "with one seed no claim about differences can be made" in md
    assert "-20.00: untestable (n=1)" in md and "significant" not in md.replace("'significant'", "")
    assert "reference: untrained network" in md and "reference: raw pixels" in md  # digits: a pixel row
    assert float(settings[IDS_ONLY][f"{KNN}.gain_vs_untrained"]) == pytest.approx(60.0 - 40.0)


def test_sweep_without_references_says_so(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_with(uri, tmp_path, "old", {FULL: [80.0, 81.0], IDS_ONLY: [70.0, 71.0]})
    out = tmp_path / "report"
    build_report(uri, "old", out, formats=["md", "csv"], log_artifacts=False)
    md = (out / "report.md").read_text()
    assert "no reference rows" in md and "reference: untrained network" not in md
    assert all(not r["reference"] for r in csv_rows(out))


def test_slurm_arrays_keep_reference_evaluations_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aftercorr pairs array task i with task i: the reference trial (knn + pixels) gets arrays of
    its own, and no ordinary trial is given a pixels evaluation (sbatch replaced by a recorder)."""
    import contextlib
    import json

    import orchestration.backends.slurm as slurm
    import orchestration.snapshot as snapshot
    from orchestration.sweeps.executors import SlurmExecutor
    from orchestration.trial import TrialSpec

    submitted: list[tuple[str, str, str, str | None]] = []  # (array, task, trial, protocol)

    class Array:
        def __init__(self, name: str) -> None:
            self.name, self.id = name, str(100 + len(arrays))
            arrays.append(self)

        def update_parameters(self, **_: object) -> None:
            pass

        def batch(self) -> contextlib.AbstractContextManager:
            return contextlib.nullcontext()

        def submit(self, task: object) -> object:
            n = sum(a == self.id for a, *_ in submitted)
            submitted.append(
                (self.id, type(task).__name__, task.spec.trial_id, getattr(task, "protocol", None))
            )
            return type("Job", (), {"job_id": f"{self.id}_{n}"})()

    arrays: list[Array] = []

    class Backend:
        def __init__(self, options: object) -> None:
            pass

        def _executor(self, snap: object, name: str, folder: object, **_: object) -> Array:
            return Array(name)

    monkeypatch.setattr(slurm, "SlurmBackend", Backend)
    monkeypatch.setattr(slurm, "max_array_size", lambda: 1001)
    monkeypatch.setattr(snapshot, "snapshot_code", lambda root: root / "snap")
    dirs = []
    for name, evals, ref in (("a", ["knn"], None), ("b", ["knn"], None), ("r", ["knn", "pixels"], UNTRAINED)):
        d = tmp_path / "trials" / name
        d.mkdir(parents=True)
        TrialSpec(name, str(d), {"seed": 0}, evals, sweep="s", backend="slurm", reference=ref).save()
        dirs.append(d)
    SlurmExecutor({}).submit(dirs)
    pixel_evals = [t for _, kind, t, p in submitted if p == "pixels"]
    assert pixel_evals == ["r"], submitted
    pretrain_arrays = {a for a, kind, *_ in submitted if kind == "PretrainTask"}
    assert len(pretrain_arrays) == 2, "the reference trial pretrains in an array of its own"
    jobs = {d.name: json.loads((d / "jobs.json").read_text()) for d in dirs}
    assert [j["protocol"] for j in jobs["a"]] == [None, "knn"]
    assert [j["protocol"] for j in jobs["r"]] == [None, "knn", "pixels"]
    assert all(j["job_id"].endswith("_0") for j in jobs["r"]), "task 0 of each of its arrays"
