"""Invalid sweep specs exit 2 with the reason and create nothing; --dry-run submits nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

GOOD = """
name: t
axes:
  - key: method.topk
    values: [1, 2]
default_profile: demo
profiles:
  demo: {preset: demo}
"""


def _sweep(spec: Path, workdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "sweep", str(spec), "--workdir", str(workdir), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


@pytest.mark.parametrize(
    "text, extra, words",
    [
        (GOOD.replace("values: [1, 2]", "values: [1, 2]\n    colour: red"), (), "colour"),
        (GOOD.replace("values: [1, 2]", "values: 3"), (), "axes.0.values"),
        (GOOD.replace("values: [1, 2]", "values: []"), (), "empty"),
        (GOOD.replace("values: [1, 2]", "values: [1, 4096]"), (), "method.topk"),
        (GOOD, ("--backend", "kubernetes"), "unknown backend"),
        (
            GOOD.replace("{preset: demo}", "{preset: cifar10, overrides: {data.root: /nonexistent/cifar}}"),
            (),
            "data.root",
        ),
        ("name: t\naxes: [\n  - key", (), "not valid YAML"),
        (GOOD.replace("name: t", "name: t\nsearch: {kind: optuna}"), (), "search.trials"),
        (GOOD.replace("method.topk", "method.nope"), (), "method.nope"),
        (GOOD, ("--profile", "huge"), "huge"),
        (GOOD.replace("name: t", "name: t\nsearch: {pruner: median}"), (), "search.pruning"),
        (GOOD.replace("name: t", "name: t\nsearch: {pruner: asha, pruning: {every: 0}}"), (), "every"),
        (GOOD.replace("name: t", "name: t\nsearch: {pruner: hyperband, pruning: {every: 5}}"), (), "pruner"),
    ],
)
def test_invalid_spec_exits_2_and_creates_nothing(tmp_path, text, extra, words):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    wd = tmp_path / "work"
    r = _sweep(spec, wd, *extra)
    assert r.returncode == 2, r.stdout + r.stderr
    assert words in r.stderr and "Traceback" not in r.stderr
    assert str(spec) in r.stderr or "--" in r.stderr  # names the file (or the flag at fault)
    assert not wd.exists(), "nothing created"


def test_missing_spec_file(tmp_path):
    r = _sweep(tmp_path / "nope.yaml", tmp_path / "work")
    assert r.returncode == 2 and "not found" in r.stderr
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("name", ["loss_weights", "queue_sizes", "neighbours", "learning_rate"])
def test_shipped_specs_dry_run(tmp_path, name):
    r = _sweep(REPO / "sweeps" / f"{name}.yaml", tmp_path / "work", "--dry-run")
    assert r.returncode == 0, r.stderr
    n_rows = sum(1 for line in r.stdout.splitlines() if line.strip().startswith(f"{name}-"))
    assert n_rows >= 4 and "nothing submitted" in r.stdout
    assert not (tmp_path / "work").exists()


def test_loss_weight_spec_has_all_on_off_combinations():
    import yaml

    spec = yaml.safe_load((REPO / "sweeps" / "loss_weights.yaml").read_text())
    weights = [tuple(w) for w in spec["axes"][0]["values"]]
    binary = {w for w in weights if set(w) <= {0, 1}}
    assert len(binary) == 7 and (0, 0, 0) not in binary
    assert any(set(w) - {0, 1} for w in weights), "non-binary weightings too"
