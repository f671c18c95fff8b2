"""The multi-crop training pipeline of a data config: the per-sample transform and the collate
function that goes with it (``data.augment_backend``)."""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset

from mugs.config import DataConfig
from mugs.data.datasets import SeededAugmentDataset


def multicrop_pipeline(cfg: DataConfig, student_views: bool = True) -> tuple[Callable, Callable | None]:
    """``pil``: the official per-crop PIL transforms, default collation. ``tensor``: parameters
    drawn per sample, views rendered per batch (``mugs.data.tensor_views``). ``student_views``:
    two more global crops for the student after the teacher's two (Mugs), or none (the two views
    serve both networks: SMoG)."""
    if cfg.augment_backend == "tensor":
        from mugs.data.tensor_views import RenderViews, TensorViews

        return TensorViews(cfg, student_views), RenderViews(cfg, student_views)
    from mugs.data.transforms import MultiCropAugmentation

    return MultiCropAugmentation(cfg, student_views), None


def multicrop_dataset(
    base: Dataset, cfg: DataConfig, seed: int, student_views: bool = True
) -> tuple[SeededAugmentDataset, Callable | None]:
    """``base`` with the configured augmentation, seeded per sample, and its collate function."""
    transform, collate = multicrop_pipeline(cfg, student_views)
    return SeededAugmentDataset(base, transform, seed), collate
