"""``--validate`` against the local cluster's simulated GPU partition (scripts/slurm-local: 8
CLOUD nodes x 8 GPUs, 96 CPUs, ~1 TB, partition ``gpu-sim``; no slurmd behind them): the
paper-scale plan is accepted job by job, an impossible request is refused with slurmctld's reason
and exit 2, and nothing is queued or created either way.

The dataset path stands for the cluster's ImageNet: validation needs only ``root/train`` to be a
directory (no job runs, so no image is read)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[1]
PAPER = ["--backend", "slurm", "--partition", "gpu-sim", "--cpus", "12", "--time", "2880"]


def _orch(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "orchestration.cli", *args, "--workdir", str(workdir)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO, stdin=subprocess.DEVNULL)


def _queued_names() -> str:
    return subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, timeout=60).stdout


@pytest.fixture
def imagenet(tmp_path: Path) -> Path:
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    return tmp_path / "imagenet"


def _verdicts(stdout: str) -> dict[str, str]:
    """Job label -> accepted | REFUSED, from the printed table."""
    rows = (re.match(r"^  (.+?)\s+(accepted|REFUSED)\s", line) for line in stdout.splitlines())
    return {m[1]: m[2] for m in rows if m}


def test_paper_sweep_accepted_job_by_job(slurm_cluster, tmp_path, imagenet):
    wd = tmp_path / "runs"
    r = _orch(
        wd, "sweep", "sweeps/loss_weights.yaml", "--profile", "paper", *PAPER, "--gpus", "8",
        "--nodes", "1", "--set", f"data.root={imagenet}", "--validate",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    verdicts = _verdicts(r.stdout)
    # 10 settings x 2 seeds + 2 reference trials, evaluated by kNN and linear probing
    assert verdicts == {
        "pretrain array of 22": "accepted",
        "eval:knn array of 22": "accepted",
        "eval:linear array of 22": "accepted",
        "ray-in-slurm allocation": "accepted",
    }, r.stdout
    assert r.stdout.count("in partition gpu-sim") == 4, "slurmctld placed every job on the simulated nodes"
    assert "all accepted" in r.stdout
    assert not wd.exists(), "validation creates nothing"
    assert "validate" not in _queued_names(), "nothing queued"


def test_impossible_request_refused_with_the_reason(slurm_cluster, tmp_path, imagenet):
    wd = tmp_path / "runs"
    r = _orch(
        wd, "sweep", "sweeps/loss_weights.yaml", "--profile", "paper", *PAPER, "--gpus", "9",
        "--set", f"data.root={imagenet}", "--validate",
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Requested node configuration is not available" in r.stderr, r.stderr
    assert _verdicts(r.stdout)["pretrain array of 22"] == "REFUSED", r.stdout
    assert not wd.exists()


def test_train_across_eight_nodes(slurm_cluster, tmp_path, imagenet):
    """One pretraining job over the whole simulated cluster (64 tasks), then its evaluations;
    one node more than the partition has is refused."""
    common = ["train", "--preset", "vit_s16_100ep", *PAPER, "--gpus", "8", "--mem", "900",
              "--set", f"data.root={imagenet}", "--evals", "knn,linear", "--validate"]
    ok = _orch(tmp_path / "a", *common, "--nodes", "8")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "using 768 processors on nodes simgpu[01-08]" in ok.stdout, ok.stdout
    assert set(_verdicts(ok.stdout).values()) == {"accepted"} and len(_verdicts(ok.stdout)) == 3
    too_many = _orch(tmp_path / "b", *common, "--nodes", "9")
    assert too_many.returncode == 2, too_many.stdout + too_many.stderr
    assert "refuses 3 of 3" in too_many.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
