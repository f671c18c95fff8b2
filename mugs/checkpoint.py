"""Atomic checkpoints: written to a temporary file in the same directory, then renamed."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mugs.atomic import CHECKPOINT_NAME as CHECKPOINT_NAME  # re-exported
from mugs.atomic import atomic_path
from mugs.atomic import atomic_write_text as atomic_write_text  # re-exported
from mugs.atomic import remove_stale_temps as remove_stale_temps  # re-exported


def atomic_save(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [kind, keys.tolist(), pos, has_gauss, cached]  # plain types: loads with weights_only
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _legacy_numpy_globals() -> list[Any]:
    """The numpy types that checkpoints written before the RNG state was stored as plain lists hold."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return [np.ndarray, _reconstruct, np.dtype, type(np.dtype(np.uint32))]


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint without arbitrary unpickling (``weights_only``: tensors, plain containers,
    and by name the numpy array types of older checkpoints' RNG state)."""
    import pickle

    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__
        raise UnsafeCheckpointError(
            f"{path}: refused: it holds objects other than tensors and plain data, which loading "
            f"would have to unpickle (and could run code). Only checkpoints written by mugs load. ({first})"
        ) from e


class UnsafeCheckpointError(ValueError):
    """A checkpoint that can only be loaded by unpickling arbitrary objects."""
