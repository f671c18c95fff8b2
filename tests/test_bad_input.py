"""A corpus of bad input: every case exits 2 within 10 s, names the key or option, and leaves the
workdir and the tracking store exactly as they were (real MLflow server; no submission).

Each case is (id, files to write, command line after ``mugs-orch``, text the message must hold).
Spec files are written under the case's own folder, outside the workdir; ``{wd}`` in the command
stands for the workdir, which each case gets fresh but non-empty (a marker file), so that "left
as it was" can be checked by listing it.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

pytestmark = [pytest.mark.mlflow, pytest.mark.timeout(600)]
REPO = Path(__file__).resolve().parents[1]

GOOD_HEAD = """\
name: bad
axes:
  - key: method.topk
    values: [4, 8]
seeds: [0]
default_profile: demo
profiles: {demo: {preset: demo}}
"""


def spec_with(**replace: str) -> str:
    """GOOD_HEAD with whole lines replaced (key: prefix -> new line), or appended."""
    lines = GOOD_HEAD.splitlines()
    for key, line in replace.items():
        hits = [i for i, x in enumerate(lines) if x.startswith(f"{key}:")]
        if hits:
            lines[hits[0]] = line
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


AXIS = "  - key: {key}\n    {kind}: {value}\n"


def axis_spec(key: str, kind: str, value: str, search: str = "") -> str:
    head = GOOD_HEAD.replace(
        "  - key: method.topk\n    values: [4, 8]\n", AXIS.format(key=key, kind=kind, value=value)
    )
    return head + (f"search: {search}\n" if search else "")


INJECT = "gpu\\ntouch /tmp/mugs-injected #"
CASES: list[tuple[str, dict[str, bytes | str], list[str], str]] = [
    ("not-utf8", {"s.yaml": b"name: caf\xe9\n"}, ["sweep", "s.yaml"], "not UTF-8"),
    ("duplicate-key", {"s.yaml": GOOD_HEAD + "name: again\n"}, ["sweep", "s.yaml"], "'name' appears twice"),
    (
        "nan-on-axis",
        {"s.yaml": axis_spec("train.lr", "values", "[0.001, .nan]")},
        ["sweep", "s.yaml"],
        "finite",
    ),
    (
        "inf-override",
        {"s.yaml": spec_with(base="base: {overrides: {train.lr: .inf}}")},
        ["sweep", "s.yaml"],
        "finite",
    ),
    (
        "million-values",
        {"s.yaml": axis_spec("train.lr", "range", "[0.0, 1.0, 0.000001]")},
        ["sweep", "s.yaml"],
        "--max-trials",
    ),
    (
        "equal-values",
        {"s.yaml": axis_spec("train.lr", "values", "[0.001, 1.0e-3]")},
        ["sweep", "s.yaml"],
        "appears twice",
    ),
    (
        "equal-lists",
        {"s.yaml": axis_spec("method.loss_weights", "values", "[[1, 0, 0], [1.0, 0, 0]]")},
        ["sweep", "s.yaml"],
        "appears twice",
    ),
    ("equal-seeds", {"s.yaml": spec_with(seeds="seeds: [0, 0]")}, ["sweep", "s.yaml"], "seeds"),
    (
        "scalar-then-key",
        {"s.yaml": spec_with(base="base: {overrides: {train: 5, train.epochs: 2}}")},
        ["sweep", "s.yaml"],
        "train",
    ),
    (
        "log-from-zero",
        {
            "s.yaml": axis_spec(
                "train.lr", "low", "0.0\n    high: 0.1\n    log: true", "{kind: random, trials: 2}"
            )
        },
        ["sweep", "s.yaml"],
        "log",
    ),
    ("unknown-top-key", {"s.yaml": spec_with(flavour="flavour: vanilla")}, ["sweep", "s.yaml"], "flavour"),
    (
        "unknown-config-key",
        {"s.yaml": axis_spec("train.nope", "values", "[1, 2]")},
        ["sweep", "s.yaml"],
        "train.nope",
    ),
    (
        "topk-over-memory",
        {"s.yaml": axis_spec("method.topk", "values", "[4, 100000]")},
        ["sweep", "s.yaml"],
        "method.topk",
    ),
    (
        "heads-not-dividing",
        {"s.yaml": axis_spec("model.num_heads", "values", "[3, 5]")},
        ["sweep", "s.yaml"],
        "num_heads",
    ),
    ("empty-axes", {"s.yaml": "name: bad\naxes: []\n"}, ["sweep", "s.yaml"], "axes"),
    ("top-level-list", {"s.yaml": "- name: bad\n"}, ["sweep", "s.yaml"], "mapping"),
    ("missing-spec", {}, ["sweep", "nothing-here.yaml"], "not found"),
    (
        "missing-base-config",
        {"s.yaml": spec_with(base="base: {config: nope.yaml}")},
        ["sweep", "s.yaml"],
        "base.config",
    ),
    ("name-traversal", {"s.yaml": spec_with(name="name: ../../escape")}, ["sweep", "s.yaml"], "name"),
    ("name-newline", {"s.yaml": spec_with(name='name: "a\\nb"')}, ["sweep", "s.yaml"], "name"),
    (
        "slurm-partition-injection",
        {"s.yaml": GOOD_HEAD + f'backend: {{name: slurm, slurm: {{partition: "{INJECT}"}}}}\n'},
        ["sweep", "s.yaml"],
        "partition",
    ),
    (
        "slurm-time-words",
        {"s.yaml": GOOD_HEAD + 'backend: {name: slurm, slurm: {time: "one hour"}}\n'},
        ["sweep", "s.yaml"],
        "time",
    ),
    (
        "slurm-unknown-option",
        {"s.yaml": GOOD_HEAD + "backend: {name: slurm, slurm: {colour: red}}\n"},
        ["sweep", "s.yaml"],
        "colour",
    ),
    ("unknown-profile", {"s.yaml": GOOD_HEAD}, ["sweep", "s.yaml", "--profile", "nope"], "--profile"),
    ("set-without-equals", {"s.yaml": GOOD_HEAD}, ["sweep", "s.yaml", "--set", "train.epochs"], "key=value"),
    (
        "set-wrong-type",
        {"s.yaml": GOOD_HEAD},
        ["sweep", "s.yaml", "--set", "train.epochs=many"],
        "train.epochs",
    ),
    ("set-inf", {"s.yaml": GOOD_HEAD}, ["sweep", "s.yaml", "--set", "train.lr=.inf"], "train.lr"),
    ("unknown-backend", {"s.yaml": GOOD_HEAD}, ["sweep", "s.yaml", "--backend", "nope"], "--backend"),
    ("ray-without-address", {"s.yaml": GOOD_HEAD}, ["sweep", "s.yaml", "--backend", "ray"], "address"),
    ("max-trials-exceeded", {"s.yaml": GOOD_HEAD}, ["sweep", "s.yaml", "--max-trials", "1"], "--max-trials"),
    (
        "cli-partition-injection",
        {"s.yaml": GOOD_HEAD},
        ["sweep", "s.yaml", "--backend", "slurm", "--partition", "gpu\ntouch /tmp/mugs-injected"],
        "partition",
    ),
    ("train-name-traversal", {}, ["train", "--preset", "demo", "--name", "../../escape"], "--name"),
    ("train-name-newline", {}, ["train", "--preset", "demo", "--name", "a\nb"], "--name"),
    ("train-unknown-preset", {}, ["train", "--preset", "nope"], "preset"),
    ("train-nan-set", {}, ["train", "--preset", "demo", "--set", "train.lr=.nan"], "train.lr"),
    (
        "cluster-profile-not-utf8",
        {"p.yaml": b"partition: caf\xe9\n", "s.yaml": GOOD_HEAD},
        ["sweep", "s.yaml", "--backend", "slurm", "--cluster-profile", "p.yaml"],
        "p.yaml",
    ),
    (
        "cluster-profile-duplicate",
        {"p.yaml": "partition: a\npartition: b\n", "s.yaml": GOOD_HEAD},
        ["sweep", "s.yaml", "--backend", "slurm", "--cluster-profile", "p.yaml"],
        "twice",
    ),
]


def _listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*"))


def _run_count(uri: str) -> int:
    client = mlflow.MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(exps, max_results=50000)) if exps else 0


def _orch(args: list[str], cwd: Path, wd: Path, uri: str) -> tuple[subprocess.CompletedProcess[str], float]:
    cmd = [sys.executable, "-m", "orchestration.cli", *args, "--workdir", str(wd), "--tracking-uri", uri]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return proc, time.monotonic() - t0


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def _main_in_process(args: list[str], wd: Path, uri: str) -> int:
    """``mugs-orch ARGS`` in this process (the CLI's own entry point; argparse errors exit 2)."""
    from orchestration.cli import main

    try:
        return main([*args, "--workdir", str(wd), "--tracking-uri", uri])
    except SystemExit as e:
        return int(e.code or 0)


@pytest.mark.parametrize(("files", "args", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_and_changes_nothing(
    tmp_path, mlflow_server, monkeypatch, capsys, files, args, needle
):
    """In-process for speed (38 cases); the subprocess path is covered by the tests below."""
    case = tmp_path / "case"
    case.mkdir()
    for name, content in files.items():
        (case / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "KEEP").write_text("a file that was here before\n")
    before, runs_before = _listing(wd), _run_count(mlflow_server)
    monkeypatch.chdir(case)
    t0 = time.monotonic()
    rc = _main_in_process(args, wd, mlflow_server)
    seconds = time.monotonic() - t0
    err = capsys.readouterr().err
    assert rc == 2, f"rc {rc}\n{err[-3000:]}"
    assert seconds < 10, f"took {seconds:.1f} s"
    assert needle in err, err[-2000:]
    assert _listing(wd) == before, "the workdir changed"
    assert _run_count(mlflow_server) == runs_before, "a run was created"
    assert not Path("/tmp/mugs-injected").exists()


def test_unreachable_tracking_server_is_named_without_its_secret(tmp_path):
    """Credentials in the URI (userinfo, ?token=) never reach the terminal; nothing is created."""
    spec = tmp_path / "s.yaml"
    spec.write_text(GOOD_HEAD)
    wd = tmp_path / "wd"
    wd.mkdir()
    uri = "http://alice:hunter2@127.0.0.1:9/mlflow?token=s3cr3t"
    for args in (["sweep", str(spec)], ["train", "--preset", "demo"]):
        proc, seconds = _orch(args, tmp_path, wd, uri)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert seconds < 20
        assert "tracking server does not answer" in proc.stderr
        assert "hunter2" not in proc.stderr + proc.stdout and "s3cr3t" not in proc.stderr + proc.stdout
        assert list(wd.iterdir()) == []


def test_second_driver_on_a_sweep_exits_2(tmp_path, mlflow_server):
    spec = tmp_path / "s.yaml"
    spec.write_text(GOOD_HEAD)
    wd = tmp_path / "wd"
    sweep_dir = wd / "sweeps" / "bad"
    sweep_dir.mkdir(parents=True)
    with open(sweep_dir / "driver.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "another driver" holds the sweep
        before, runs_before = _listing(wd), _run_count(mlflow_server)
        proc, _ = _orch(["sweep", str(spec)], tmp_path, wd, mlflow_server)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "another mugs-orch sweep is driving this sweep" in proc.stderr
    assert _listing(wd) == before and _run_count(mlflow_server) == runs_before


def test_invalid_optuna_proposal_is_told_fail_and_the_search_goes_on(tmp_path, mlflow_server):
    """A proposal whose config does not validate is told to the study as FAIL, creates no trial
    and no run, and the sweep completes with the valid ones; a rerun does not jam on it. Each
    option is valid with the base config (the driver checks that before anything starts); only
    the combination of 99 dimensions with 32 heads is not."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    spec = tmp_path / "o.yaml"
    spec.write_text(
        "name: optuna_heads\n"
        "axes:\n  - {key: model.embed_dim, choices: [96, 99]}\n  - {key: model.num_heads, choices: [3, 32]}\n"
        "search: {kind: optuna, trials: 6, parallel: 2, metric: eval/knn_top1, direction: maximize}\n"
        "default_profile: demo\nprofiles: {demo: {preset: demo}}\n"
    )
    wd = tmp_path / "wd"
    tiny = ["--set", "train.max_steps=4", "--set", "data.subset=128", "--set", "train.batch_size=32"]
    for _ in range(2):  # the rerun finds the study complete
        proc, _ = _orch(["sweep", str(spec), *tiny], tmp_path, wd, mlflow_server)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    journal = JournalFileBackend(str(wd / "sweeps" / "optuna_heads" / "optuna.journal"))
    trials = optuna.load_study(study_name="optuna_heads", storage=JournalStorage(journal)).trials
    states = {t.number: t.state.name for t in trials}
    combo = {
        t.number: ([96, 99][t.params["model.embed_dim"]], [3, 32][t.params["model.num_heads"]])
        for t in trials
    }
    invalid = [n for n in states if combo[n] == (99, 32)]
    assert invalid and all(states[n] == "FAIL" for n in invalid), (states, combo)
    assert all(states[n] == "COMPLETE" for n in states if n not in invalid), (states, combo)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("optuna_heads")
    runs = client.search_runs([exp.experiment_id], "tags.`mugs.role` = 'trial'")
    pairs = {(r.data.params["model.embed_dim"], r.data.params["model.num_heads"]) for r in runs}
    assert ("99", "32") not in pairs, "no run for an invalid proposal"


def test_a_million_value_axis_is_refused_before_expansion(tmp_path):
    """The count comes from the axes' sizes (no value is listed, no config resolved): refused
    in well under a second, with the count and the limit in the message."""
    from orchestration.sweeps.driver import expand
    from orchestration.sweeps.spec import SpecError, load_spec

    path = tmp_path / "s.yaml"
    path.write_text(axis_spec("train.lr", "range", "[0.0, 1.0, 0.000001]"))
    spec = load_spec(path)
    assert spec.planned_trials() == 1_000_001
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match=r"1,000,001 trials .* more than --max-trials 10,000"):
        expand(spec, {}, str(path), max_trials=10_000)
    assert time.perf_counter() - t0 < 1.0
