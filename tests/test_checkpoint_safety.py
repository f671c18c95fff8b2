"""Checkpoints load without arbitrary unpickling; the RNG state still round-trips exactly."""

import os
import random

import numpy as np
import pytest
import torch

from mugs import checkpoint as ckpt


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("true",))


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"step": 1, "payload": _RunsCode()}, path)
    with pytest.raises(ckpt.UnsafeCheckpointError, match="refused: it holds objects other than tensors"):
        ckpt.load(path)


def test_a_temporary_file_left_by_a_killed_save_is_removed_at_start(tmp_path):
    from mugs.engine import Trainer
    from tests.helpers import demo_config

    stale = tmp_path / ".checkpoint.pth.x1y2.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".metrics.jsonl.z.tmp"  # not the trainer's checkpoint: left alone
    other.write_bytes(b"")
    trainer = Trainer(demo_config("train.epochs=1"), tmp_path, callbacks=[])
    assert trainer.maybe_resume() is False
    assert not stale.exists() and other.exists()


def test_rng_state_round_trips_through_a_safe_load(tmp_path):
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    path = tmp_path / "rng.pth"
    ckpt.atomic_save({"rng": ckpt.rng_state()}, path)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    ckpt.set_rng_state(ckpt.load(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_older_numpy_rng_state_still_loads(tmp_path):
    """Checkpoints written before the numpy state became plain lists held an ndarray."""
    path = tmp_path / "old.pth"
    torch.save(
        {
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
            }
        },
        path,
    )
    np_before = np.random.rand()
    ckpt.set_rng_state(ckpt.load(path)["rng"])
    assert np.random.rand() == np_before


def test_checkpoint_predating_pos_embed_interp_resumes_only_as_trained(tmp_path):
    """Written before model.pos_embed_interp existed (timm's resampling then): a run with the new
    default (dino) is refused with the reason, the same run with timm resumes."""
    from mugs.engine import Trainer
    from tests.helpers import demo_config

    small = ("data.subset=128", "train.batch_size=32", "train.max_steps=2")
    tr = Trainer(demo_config(*small), tmp_path)
    state = tr.state_dict()
    del state["config"]["model"]["pos_embed_interp"]
    ckpt.atomic_save(state, tr.checkpoint_path)
    with pytest.raises(ValueError, match="different model configuration"):
        Trainer(demo_config(*small), tmp_path).maybe_resume()
    assert Trainer(demo_config(*small, "model.pos_embed_interp=timm"), tmp_path).maybe_resume()
