"""The multi-crop training pipeline of a data config: the per-sample transform and the collate
function that goes with it (``data.augment_backend``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch.utils.data import Dataset

from mugs.config import DataConfig
from mugs.data.datasets import SeededAugmentDataset
from mugs.errors import ConfigError

if TYPE_CHECKING:
    from mugs.data.tensor_views import ViewExtras


def multicrop_pipeline(
    cfg: DataConfig, student_views: bool = True, extras: ViewExtras | None = None
) -> tuple[Callable, Callable | None]:
    """``pil``: the official per-crop PIL transforms, default collation. ``tensor``: parameters
    drawn per sample, views rendered per batch (``mugs.data.tensor_views``). ``student_views``:
    two more global crops for the student after the teacher's two (Mugs), or none (the two views
    serve both networks: SMoG). ``extras`` (crop geometry, per-patch jitter: PW-Self) need the
    tensor views."""
    if cfg.augment_backend == "tensor":
        from mugs.data.tensor_views import RenderViews, TensorViews

        return TensorViews(cfg, student_views, extras), RenderViews(cfg, student_views, extras)
    if extras is not None and (extras.geometry or extras.patch_jitter is not None):
        raise ConfigError(
            "data.augment_backend: crop geometry and per-patch jitter come from the tensor views; "
            "set data.augment_backend: tensor"
        )
    from mugs.data.transforms import MultiCropAugmentation

    return MultiCropAugmentation(cfg, student_views), None


def multicrop_dataset(
    base: Dataset, cfg: DataConfig, seed: int, student_views: bool = True, extras: ViewExtras | None = None
) -> tuple[SeededAugmentDataset, Callable | None]:
    """``base`` with the configured augmentation, seeded per sample, and its collate function."""
    transform, collate = multicrop_pipeline(cfg, student_views, extras)
    return SeededAugmentDataset(base, transform, seed), collate
