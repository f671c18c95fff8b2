"""The GPU check has never met a GPU here: its plumbing runs on the CPU (``--smoke --device cpu``)
so that the first GPU machine runs it without edits. Every section must end ``ok`` and the JSON
must carry what the GPU run will be read by. Slow (about 4 minutes on 2 cores): ``-m slow``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CIFAR_ROOT = REPO.parent / "shared" / "data" / "cifar10"  # the shared CIFAR-10 tarballs


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_section_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    cmd = [sys.executable, "benchmarks/gpu_check.py", "--smoke", "--device", "cpu", "--cifar-root",
           str(CIFAR_ROOT), "--out", str(out)]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    d = json.loads(out.read_text())
    assert d["smoke"] is True and d["device"]["name"] and d["device"]["type"] == "cpu"
    for section in ("step", "cifar10", "ddp"):
        assert d[section]["status"] == "ok", (section, d[section])
    assert d["step"]["variants"] and d["step"]["flops_per_step"]
    assert d["ddp"]["all_reduce_ok"] is True and d["ddp"]["train_rc"] == 0
    assert 0.0 <= d["cifar10"]["knn_top1"] <= 100.0
    assert set(d["goals"]["goals"]) == {"default_over_fp32_eager", "mfu"}
