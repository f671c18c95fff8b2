"""Every shipped sweep spec plans at every one of its profiles: ``--dry-run`` exits 0, lists its
trials and creates nothing (an ImageNet profile against an empty ImageFolder root)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "orchestration.cli"]
SPECS = sorted((REPO / "sweeps").glob("*.yaml"))
CASES = [
    (spec, profile)
    for spec in SPECS
    for profile in (yaml.safe_load(spec.read_text()).get("profiles") or {"": None})
]


@pytest.mark.parametrize(("spec", "profile"), CASES, ids=[f"{s.stem}-{p or 'default'}" for s, p in CASES])
def test_shipped_sweep_plans(tmp_path, spec, profile):
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    cmd = [*CLI, "sweep", str(spec), "--dry-run", "--workdir", str(tmp_path / "w")]
    if profile:
        cmd += ["--profile", profile]
    if profile == "paper":
        cmd += ["--set", f"data.root={tmp_path / 'imagenet'}"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "dry run: nothing submitted" in r.stdout
    assert not (tmp_path / "w").exists()
