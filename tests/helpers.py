"""Shared helpers for trainer tests: small real batches from scikit-learn's digits."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from mugs.config import MugsConfig, build_config
from mugs.data.datasets import load_split
from mugs.data.pipeline import multicrop_dataset
from mugs.methods.registry import method_class


def demo_config(*overrides: str) -> MugsConfig:
    return build_config("demo", None, list(overrides))


def real_batch(cfg: MugsConfig, batch_size: int, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One multi-crop batch of real digits images."""
    base = load_split(cfg.data, "train")
    views = method_class(cfg.method.name).student_views
    ds, collate = multicrop_dataset(base, cfg.data, seed, student_views=views)
    crops, weak = next(iter(DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate)))
    return crops, weak
