"""The console script: --help lists every subcommand, --version, bad input exits 2 creating nothing."""

import subprocess
import sys
from pathlib import Path

from mugs import __version__

CLI = [sys.executable, "-m", "orchestration.cli"]


def test_help_lists_subcommands():
    out = subprocess.run([*CLI, "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("train", "sweep", "report", "status", "cancel", "ui", "sync", "presets"):
        assert cmd in out


def test_console_script_version():
    exe = Path(sys.executable).with_name("mugs-orch")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"mugs-orch {__version__}"


def test_train_bad_input_exits_2_and_creates_nothing(tmp_path):
    wd = tmp_path / "w"
    for args in (
        ["--preset", "demo", "--backend", "pbs"],
        ["--preset", "demo", "--set", "method.topk=0"],
        ["--preset", "demo", "--evals", "svm"],
        [],
    ):
        r = subprocess.run([*CLI, "train", *args, "--workdir", str(wd)], capture_output=True, text=True)
        assert r.returncode == 2, (args, r.stderr)
        assert "error" in r.stderr and "Traceback" not in r.stderr
    assert not wd.exists()


def test_report_of_unknown_sweep_exits_2(tmp_path):
    r = subprocess.run([*CLI, "report", "nope", "--workdir", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "nope" in r.stderr


def test_validate_without_slurm_and_pwself_without_geometry_exit_2(tmp_path):
    """``--validate`` asks slurmctld: refused for the local backend; PW-Self on the PIL views (no
    crop geometry) is refused by name. Neither creates anything."""
    wd = tmp_path / "w"
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    for cmd in (
        ["train", "--preset", "demo", "--validate"],
        ["sweep", "sweeps/methods.yaml", "--validate"],
        ["sweep", "sweeps/methods.yaml", "--profile", "paper", "--dry-run",
         "--set", f"data.root={tmp_path / 'imagenet'}", "--set", "data.augment_backend=pil"],
    ):
        r = subprocess.run([*CLI, *cmd, "--workdir", str(wd)], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parents[1])
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert ("--validate" in r.stderr) or ("PW-Self needs 'tensor'" in r.stderr), r.stderr
    assert not wd.exists()


def test_methods_paper_profile_plans_every_method_on_an_imagefolder(tmp_path):
    """PW-Self and UniVIP run on ImageNet through the tensor views: the paper profile's dry run
    lists a trial per method and seed, and creates nothing."""
    wd = tmp_path / "w"
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    cmd = ["sweep", "sweeps/methods.yaml", "--profile", "paper", "--dry-run", "--set", f"data.root={tmp_path / 'imagenet'}"]
    r = subprocess.run([*CLI, *cmd, "--workdir", str(wd)], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr
    for method in ("mugs", "smog", "pwself", "univip"):
        assert r.stdout.count(f'"{method}"') == 2, r.stdout
    assert "dry run: nothing submitted" in r.stdout and not wd.exists()
