"""orchestration.tracking: config flattening, run helpers, and the metrics logger with its spool.

The ``mlflow`` tests run against a real MLflow server (fixture ``mlflow_server``); nothing of
MLflow is mocked. Runs are read back with an explicit ``MlflowClient``, never the global state.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from mugs.callbacks import Callback
from mugs.config import build_config
from mugs.diagnostics import BRANCHES, branch_kinds, diag_key
from orchestration.tracking import (
    PARENT_RUN_TAG,
    MlflowMetricsCallback,
    TrackingUnavailableWarning,
    create_run,
    fail_fast_http,
    flatten_config,
    get_or_create_experiment,
    get_status,
    is_secret_key,
    log_artifact,
    log_metrics,
    redact,
    redact_uri,
    resolve_tracking_uri,
    run_tags_for_environment,
    set_status,
    set_tags,
    sync_spool,
)
from orchestration.tracking import spool as spool_mod
from orchestration.tracking.failfast import MAX_RETRIES_ENV, TIMEOUT_ENV

TRAIN_OVERRIDES = ("train.max_steps=6", "train.log_every=1", "data.subset=256", "train.batch_size=32")
STEPS = list(range(1, 7))
TRAINER_KEYS = (
    "step",
    "epoch",
    "loss",
    "loss/instance",
    "loss/local_group",
    "loss/group",
    "lr",
    "wd",
    "momentum",
    "teacher_temp",
    "images_per_s",
) + tuple(diag_key(b, k) for b in BRANCHES for k in branch_kinds(b))  # every branch on (demo)


@pytest.fixture(autouse=True)
def _quiet_mlflow(monkeypatch):
    # Bounded HTTP calls for every test (set here so monkeypatch restores them afterwards; the
    # callback's apply_fail_fast_env keeps values that are already set).
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv(MAX_RETRIES_ENV, "0")
    monkeypatch.setenv(TIMEOUT_ENV, "2")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Recorder(Callback):
    """Keeps what the trainer hands to on_step_end (what metrics.jsonl would hold)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_step_end(self, trainer, metrics):
        self.rows.append(dict(metrics))


def _train(out_dir: Path, callback: Callback) -> tuple[str, Recorder]:
    from mugs.engine import Trainer
    from tests.helpers import demo_config

    recorder = Recorder()
    trainer = Trainer(demo_config(*TRAIN_OVERRIDES), out_dir, callbacks=[recorder, callback])
    return trainer.fit(), recorder


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from orchestration.tracking import client_for

    return sorted((m.step, m.value) for m in client_for(uri).get_metric_history(run_id, key))


def _new_run(uri: str, name: str = "run") -> str:
    experiment_id = get_or_create_experiment(uri, f"mugs-test-{uuid.uuid4().hex[:10]}")
    return create_run(uri, experiment_id, name, params={}, tags={})


def _assert_logged_once(uri: str, run_id: str, recorded: list[dict[str, float]]) -> None:
    keys = [k for k in recorded[0] if k != "step"]
    for key in keys:
        expected = [(int(r["step"]), float(r[key])) for r in recorded]
        assert _history(uri, run_id, f"train/{key}") == expected, key


# ------------------------------------------------------------------ units


def test_flatten_real_config():
    cfg = build_config("demo", check_data=False)
    flat = flatten_config(cfg.to_dict())
    assert flat["method.loss_weights"] == "[1.0, 1.0, 1.0]"
    assert flat["train.batch_size"] == str(cfg.train.batch_size)  # an int as its digits
    assert flat["data.root"] == "null"
    assert flat["train.compile"] == "false"
    assert flat["train.lr"] == "0.002"
    assert flat["model.arch"] == "vit_tiny"
    assert all(isinstance(v, str) for v in flat.values())
    assert not any(isinstance(v, dict) for v in flat.values())
    assert flatten_config({"a": {"b": {}}}, prefix="cfg") == {"cfg.a.b": "{}"}


def test_redact_drops_secrets():
    cfg = build_config("demo", check_data=False).to_dict()
    cfg["password"] = "hunter2"
    cfg["train"]["wandb_api_key"] = "abc"
    cfg["storage"] = {"HF_TOKEN": "t", "client_secret": "s", "uri": "https://bob:pw@host.example/x"}
    clean = redact(cfg)
    flat = flatten_config(clean)
    assert "password" not in flat and "train.wandb_api_key" not in flat
    assert "storage.HF_TOKEN" not in flat and "storage.client_secret" not in flat
    assert flat["storage.uri"] == "https://***@host.example/x"
    assert "hunter2" not in json.dumps(clean) and "pw@" not in json.dumps(clean)
    assert flat["train.batch_size"] == str(cfg["train"]["batch_size"])  # the rest is kept
    # flat dotted dicts too
    assert redact({"db.password": "x", "db.host": "h"}) == {"db.host": "h"}
    assert cfg["password"] == "hunter2"  # the input is not modified
    # model "tokens" in vision configs are not secrets
    assert flat["eval.avgpool_patchtokens"] == "false"
    for key in ("token", "hf_token", "authToken", "access_token", "db.passwd", "aws_access_key_id"):
        assert is_secret_key(key), key
    for key in ("mask_token", "cls_token", "num_tokens", "model.patch_size", "method.topk"):
        assert not is_secret_key(key), key


def test_resolve_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workdir = tmp_path / "work" / "dir"
    assert resolve_tracking_uri("http://127.0.0.1:5000", workdir) == "http://127.0.0.1:5000"
    assert not workdir.exists()
    uri = resolve_tracking_uri(None, workdir)
    assert uri == f"sqlite:///{workdir.resolve()}/mlflow.db" and uri.startswith("sqlite:////")
    assert workdir.is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    assert resolve_tracking_uri(None, workdir) == "http://127.0.0.1:5001"
    assert resolve_tracking_uri("", workdir) == "http://127.0.0.1:5001"
    assert resolve_tracking_uri("file:///x", workdir) == "file:///x"
    assert redact_uri("https://user:secret@mlflow.example:443/x") == "https://***@mlflow.example:443/x"


def test_sqlite_store_keeps_artifacts_beside_its_database(tmp_path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # MLflow's own default would be ./mlruns here
    uri = resolve_tracking_uri(None, tmp_path / "work")
    run_id = _new_run(uri)
    (tmp_path / "config.yaml").write_text("a: 1\n")
    log_artifact(uri, run_id, tmp_path / "config.yaml")
    assert list(elsewhere.iterdir()) == []
    stored = list((tmp_path / "work" / "mlruns").rglob("config.yaml"))
    assert len(stored) == 1 and stored[0].read_text() == "a: 1\n"


def test_run_tags_for_environment(tmp_path):
    tags = run_tags_for_environment()
    assert set(tags) == {"mugs.host", "mugs.version", "mugs.git_commit", "mugs.git_dirty"}
    import mugs

    assert tags["mugs.version"] == mugs.__version__
    assert tags["mugs.host"]
    if (Path(mugs.__file__).resolve().parent.parent / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", tags["mugs.git_commit"])
        assert tags["mugs.git_dirty"] in {"true", "false"}
    no_repo = run_tags_for_environment(tmp_path)  # not a git checkout: no failure
    assert no_repo["mugs.git_commit"] == "unknown" and no_repo["mugs.git_dirty"] == "unknown"


def test_fail_fast_http_restores_env(monkeypatch):
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    monkeypatch.setenv(MAX_RETRIES_ENV, "3")
    with fail_fast_http(max_retries=1, timeout_s=4):
        assert os.environ[MAX_RETRIES_ENV] == "1" and os.environ[TIMEOUT_ENV] == "4"
    assert os.environ[MAX_RETRIES_ENV] == "3" and TIMEOUT_ENV not in os.environ


def test_helpers_fail_fast_on_unreachable_server(monkeypatch):
    monkeypatch.delenv(MAX_RETRIES_ENV, raising=False)
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    dead_uri = f"http://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 - whatever MLflow raises, it must raise quickly
        get_status(dead_uri, "0" * 32)
    assert time.monotonic() - t0 < 15  # MLflow's defaults would retry 7 times with backoff
    assert os.environ[MAX_RETRIES_ENV] == "0" and os.environ[TIMEOUT_ENV] == "5"


def test_spool_replay_partial_failure_keeps_the_rest(tmp_path):
    spool = tmp_path / "spool.jsonl"
    rows = [{"run_id": "r", "key": "k", "value": float(i), "timestamp": 1, "step": i} for i in range(10)]
    spool_mod.append(spool, rows[:5])
    with spool.open("ab") as f:  # a line torn by a crash must not swallow the next append
        f.write(b'{"run_id": "r", "ke')
    spool_mod.append(spool, rows[5:])
    assert spool_mod.count(spool) == 10

    sent: list[dict] = []

    def flaky(batch):
        if len(sent) >= 4:
            raise ConnectionError("down")
        sent.extend(batch)

    result = spool_mod.replay(spool, flaky, batch=4)
    assert result.delivered == 4 and isinstance(result.error, ConnectionError)
    assert [r["step"] for r in spool_mod.read(spool)] == list(range(4, 10))

    result = spool_mod.replay(spool, sent.extend, batch=4)
    assert result.error is None and result.delivered == 6 and result.skipped == 1
    assert [r["step"] for r in sent] == list(range(10))  # each row exactly once
    assert not spool.exists()
    assert spool_mod.replay(spool, sent.extend, batch=4).delivered == 0


def test_spool_replay_is_exclusive(tmp_path):
    spool = tmp_path / "spool.jsonl"
    spool_mod.append(spool, [{"run_id": "r", "key": "k", "value": 1.0, "timestamp": 1, "step": 1}])
    entered, release = threading.Event(), threading.Event()

    def slow(batch):
        entered.set()
        assert release.wait(10)

    worker = threading.Thread(target=spool_mod.replay, args=(spool, slow, 10))
    worker.start()
    try:
        assert entered.wait(10)
        assert spool_mod.replay(spool, lambda b: None, 10, wait_s=0.1).busy
    finally:
        release.set()
        worker.join(10)
    assert not spool.exists()


# ----------------------------------------------------------- MLflow server


@pytest.mark.mlflow
@pytest.mark.timeout(300)
def test_runs_params_tags_parent_and_status(mlflow_server, tmp_path):
    from orchestration.tracking import client_for

    uri = mlflow_server
    name = f"mugs-test-{uuid.uuid4().hex[:10]}"
    experiment_id = get_or_create_experiment(uri, name)
    assert get_or_create_experiment(uri, name) == experiment_id

    env_tags = run_tags_for_environment()
    parent = create_run(uri, experiment_id, "sweep", params={}, tags={"mugs.kind": "sweep", **env_tags})
    params = flatten_config(build_config("demo", check_data=False).to_dict())
    params.update({f"extra.p{i:03d}": str(i) for i in range(150)})  # > 100: several batches
    child = create_run(
        uri,
        experiment_id,
        "trial-0",
        params={**params, "password": "hunter2"},
        tags={"mugs.kind": "trial", "api_token": "t0ps3cret"},
        parent_run_id=parent,
    )

    client = client_for(uri)
    run = client.get_run(child)
    assert run.data.params == params
    assert run.data.params["method.loss_weights"] == "[1.0, 1.0, 1.0]"
    assert run.data.tags[PARENT_RUN_TAG] == parent
    assert run.data.tags["mugs.kind"] == "trial"
    assert "api_token" not in run.data.tags
    assert "t0ps3cret" not in json.dumps(run.data.tags) and "hunter2" not in json.dumps(run.data.params)
    assert run.info.run_name == "trial-0"
    parent_tags = client.get_run(parent).data.tags
    assert parent_tags["mugs.git_commit"] == env_tags["mugs.git_commit"]
    assert parent_tags["mugs.version"] == env_tags["mugs.version"]

    found = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent}'")
    assert [r.info.run_id for r in found] == [child]

    set_tags(uri, child, {"mugs.slurm_job_id": "123", "db_password": "x"})
    tags = client.get_run(child).data.tags
    assert tags["mugs.slurm_job_id"] == "123" and "db_password" not in tags

    assert get_status(uri, child) == "RUNNING"
    set_status(uri, child, "FINISHED")
    assert get_status(uri, child) == "FINISHED"
    assert client.get_run(child).info.end_time is not None
    set_status(uri, child, "RUNNING")  # a resumed run
    assert get_status(uri, child) == "RUNNING"
    for final in ("FAILED", "KILLED"):
        run_id = create_run(uri, experiment_id, final.lower(), params={}, tags={}, parent_run_id=parent)
        assert get_status(uri, run_id) == "RUNNING"
        set_status(uri, run_id, final.lower())
        assert get_status(uri, run_id) == final
    with pytest.raises(ValueError):
        set_status(uri, child, "DONE")

    note = tmp_path / "summary.json"
    note.write_text('{"knn_top1": 0.9}\n')
    log_artifact(uri, child, note, artifact_path="eval")
    assert [a.path for a in client.list_artifacts(child, "eval")] == ["eval/summary.json"]


@pytest.mark.mlflow
@pytest.mark.timeout(300)
def test_callback_logs_every_step_once(mlflow_server, tmp_path):
    uri = mlflow_server
    run_id = _new_run(uri)
    spool = tmp_path / "spool.jsonl"
    callback = MlflowMetricsCallback(uri, run_id, spool, flush_interval_s=0.5)
    status, recorder = _train(tmp_path / "out", callback)
    assert status == "completed"
    assert [r["step"] for r in recorder.rows] == STEPS
    assert set(recorder.rows[0]) == set(TRAINER_KEYS)
    _assert_logged_once(uri, run_id, recorder.rows)
    assert _history(uri, run_id, "train/loss") == [(r["step"], r["loss"]) for r in recorder.rows]
    assert callback.delivered == 6 * (len(recorder.rows[0]) - 1) and callback.spooled == 0
    assert not spool.exists()


@pytest.mark.mlflow
@pytest.mark.timeout(300)
def test_unreachable_server_loses_nothing(mlflow_server, tmp_path, capfd):
    uri = mlflow_server
    run_id = _new_run(uri)  # the run exists; the job then cannot reach the server
    dead_uri = f"http://127.0.0.1:{_free_port()}"  # nobody listens there
    spool = tmp_path / "spool.jsonl"
    callback = MlflowMetricsCallback(dead_uri, run_id, spool, flush_interval_s=0.2)

    with pytest.warns(TrackingUnavailableWarning, match="mlflow unreachable at") as caught:
        t0 = time.monotonic()
        status, recorder = _train(tmp_path / "out", callback)
        elapsed = time.monotonic() - t0
    assert status == "completed" and [r["step"] for r in recorder.rows] == STEPS
    assert elapsed < 120
    unreachable = [w for w in caught if issubclass(w.category, TrackingUnavailableWarning)]
    assert len(unreachable) == 1  # once per outage, however many flushes failed
    err = capfd.readouterr().err
    assert err.count("mlflow unreachable at") == 1 and str(spool) in err

    n_keys = len(recorder.rows[0]) - 1
    rows = spool_mod.read(spool)
    assert len(rows) == 6 * n_keys == callback.spooled and callback.delivered == 0
    assert sorted(r["step"] for r in rows if r["key"] == "train/loss") == STEPS
    assert _history(uri, run_id, "train/loss") == []

    assert sync_spool(uri, run_id, spool) == 6 * n_keys
    _assert_logged_once(uri, run_id, recorder.rows)
    assert not spool.exists()
    assert sync_spool(uri, run_id, spool) == 0  # nothing delivered twice
    _assert_logged_once(uri, run_id, recorder.rows)

    # A crash between "sent" and "spool rewritten" re-sends rows: they keep their original
    # timestamps, so the server stores each (key, step, timestamp, value) once.
    spool_mod.append(spool, rows)
    assert sync_spool(uri, run_id, spool) == len(rows)
    _assert_logged_once(uri, run_id, recorder.rows)


@pytest.mark.mlflow
@pytest.mark.timeout(300)
def test_spooled_metrics_are_replayed_by_the_next_job(mlflow_server, tmp_path):
    uri = mlflow_server
    run_id = _new_run(uri)
    spool = tmp_path / "spool.jsonl"
    dead_uri = f"http://127.0.0.1:{_free_port()}"
    with pytest.warns(TrackingUnavailableWarning):
        assert not log_metrics(dead_uri, run_id, {"eval/knn_top1": 0.5, "eval/linear_top1": 0.25}, 3, spool)
    assert spool_mod.count(spool) == 2

    # A job that reaches the server replays the spool at its first flush, then logs its own.
    callback = MlflowMetricsCallback(uri, run_id, spool, flush_interval_s=0.2)
    callback.on_train_start(None)
    recorded = [{"step": s, "epoch": 0, "loss": 2.0 / s, "images_per_s": 100.0 + s} for s in STEPS]
    for metrics in recorded:
        callback.on_step_end(None, metrics)
    deadline = time.monotonic() + 30
    while spool.exists() and time.monotonic() < deadline:  # replayed by a periodic flush
        time.sleep(0.1)
    assert not spool.exists()
    assert callback.close(timeout_s=30)
    assert _history(uri, run_id, "eval/knn_top1") == [(3, 0.5)]
    assert _history(uri, run_id, "eval/linear_top1") == [(3, 0.25)]
    _assert_logged_once(uri, run_id, recorded)
    assert callback.delivered == 2 + 3 * 6 and callback.spooled == 0
    assert log_metrics(uri, run_id, {"eval/knn_top1": 0.75}, 6, spool)
    assert _history(uri, run_id, "eval/knn_top1") == [(3, 0.5), (6, 0.75)]
    assert not spool.exists()


@pytest.mark.mlflow
@pytest.mark.timeout(120)
def test_close_is_bounded_when_the_server_hangs(mlflow_server, tmp_path):
    uri = mlflow_server
    run_id = _new_run(uri)
    spool = tmp_path / "spool.jsonl"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)  # accepts connections in the kernel, never answers
        hung_uri = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
        callback = MlflowMetricsCallback(hung_uri, run_id, spool, flush_interval_s=60)
        callback.on_train_start(None)
        for step in STEPS:
            t0 = time.perf_counter()
            callback.on_step_end(None, {"step": step, "epoch": 0, "loss": 1.0 / step, "lr": 1e-3})
            assert time.perf_counter() - t0 < 0.05  # never waits for the network
        t0 = time.monotonic()
        with pytest.warns(TrackingUnavailableWarning):
            assert callback.close(timeout_s=0.5) is False
            assert time.monotonic() - t0 < 5
            assert spool_mod.count(spool) == 6 * 3  # loss, epoch, lr per step: all on disk
            callback._thread.join(10)  # the hung request times out (2 s) ...
        assert not callback._thread.is_alive()
        assert spool_mod.count(spool) == 6 * 3  # ... and its rows are not spooled twice
    assert sync_spool(uri, run_id, spool) == 18
    assert _history(uri, run_id, "train/loss") == [(s, 1.0 / s) for s in STEPS]
    assert sync_spool(uri, run_id, spool) == 0
