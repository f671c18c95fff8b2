"""Stop at step N, resume, and the losses at N+1..N+k equal an uninterrupted run's (CPU, bit-exact)."""

import json
from pathlib import Path

from mugs.callbacks import Callback, JsonlMetrics
from mugs.engine import Trainer
from tests.helpers import demo_config

OVERRIDES = (
    "train.max_steps=8",
    "train.log_every=1",
    "data.subset=512",
    "train.batch_size=32",
    "train.epochs=2",
    # the demo recipe uses weak global views only; exercise local crops and strong views too
    "data.local_crops_number=2",
    "data.strong_prob=0.5",
    "data.augment_backend=pil",  # strong views exist on the PIL path only
)


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, metrics):
        if metrics["step"] == self.step:
            trainer.request_stop()


def _losses(path: Path) -> dict[int, float]:
    return {d["step"]: d["loss"] for d in map(json.loads, path.read_text().splitlines())}


def test_resume_continues_bit_exactly(tmp_path):
    cfg = demo_config(*OVERRIDES)
    a = tmp_path / "uninterrupted"
    assert Trainer(cfg, a, callbacks=[JsonlMetrics(a / "metrics.jsonl")]).fit() == "completed"

    # the interrupted run also runs the online kNN monitor: it must not disturb training either
    cfg_b = demo_config(*OVERRIDES, "eval.monitor_every=2", "eval.monitor_queries=100")
    b = tmp_path / "interrupted"
    first = Trainer(cfg_b, b, callbacks=[JsonlMetrics(b / "metrics.jsonl"), StopAt(5)])
    assert first.fit() == "preempted"  # crosses the epoch boundary at step 8? no: 16 batches/epoch
    assert first.step == 5
    second = Trainer(cfg_b, b, callbacks=[JsonlMetrics(b / "metrics.jsonl")])
    assert second.maybe_resume() and second.step == 5
    assert second.fit() == "completed"

    la, lb = _losses(a / "metrics.jsonl"), _losses(b / "metrics.jsonl")
    assert sorted(lb) == list(range(1, 9)), "each step logged exactly once"
    for s in range(1, 9):
        assert la[s] == lb[s], f"step {s}: {la[s]} != {lb[s]}"
    assert not list(b.glob(".*.tmp")), "no temporary checkpoint files left"
    mon = {
        d["step"]: d.get("monitor/knn_top1")
        for d in map(json.loads, (b / "metrics.jsonl").read_text().splitlines())
    }
    assert [s for s, v in mon.items() if v is not None] == [2, 4, 6, 8]
    assert all(10.0 < mon[s] <= 100.0 for s in (2, 4, 6, 8)), mon  # 10 classes: chance is 10 %


def test_resume_refuses_a_different_method(tmp_path):
    import pytest

    cfg = demo_config(*OVERRIDES)
    Trainer(cfg, tmp_path, callbacks=[StopAt(1)]).fit()
    other = demo_config(*OVERRIDES, "method.loss_weights=[1,0,1]")
    with pytest.raises(ValueError, match="different method"):
        Trainer(other, tmp_path).maybe_resume()


def test_a_checkpoint_from_before_method_plugins_resumes_as_mugs(tmp_path):
    """Checkpoints written before ``method.name`` existed have the same layout (student, teacher,
    memories, loss state): their config reads as Mugs and training continues from them."""
    from mugs import checkpoint as ckpt

    over = (
        "train.max_steps=4",
        "train.log_every=1",
        "data.subset=256",
        "train.batch_size=32",
        "train.epochs=2",
    )
    first = Trainer(demo_config(*over), tmp_path, callbacks=[StopAt(2)])
    assert first.fit() == "preempted"
    state = ckpt.load(first.checkpoint_path)
    del state["config"]["method"]["name"]  # as the trainer wrote it then
    assert {"student", "teacher", "student_memory", "teacher_memory", "loss"} <= set(state)
    ckpt.atomic_save(state, first.checkpoint_path)
    again = Trainer(demo_config(*over), tmp_path)
    assert again.maybe_resume() and again.step == 2 and again.fit() == "completed"


def test_resume_refuses_a_checkpoint_of_another_method(tmp_path):
    import pytest

    over = ("train.max_steps=4", "data.subset=256", "train.batch_size=32", "train.epochs=2")
    Trainer(demo_config(*over, "method.name=smog"), tmp_path, callbacks=[StopAt(1)]).fit()
    with pytest.raises(ValueError, match="different method configuration"):
        Trainer(demo_config(*over), tmp_path).maybe_resume()
