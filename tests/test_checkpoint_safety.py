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
    with pytest.raises(Exception, match="(?i)weights_only|unpickl"):
        ckpt.load(path)


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
    torch.save({"rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                        "torch": torch.get_rng_state()}}, path)
    np_before = np.random.rand()
    ckpt.set_rng_state(ckpt.load(path)["rng"])
    assert np.random.rand() == np_before
