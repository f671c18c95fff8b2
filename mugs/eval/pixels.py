"""The raw-pixel reference: the weighted kNN of :mod:`mugs.eval.knn` on pixels instead of features.

Each image goes through the evaluation transform (resize, centre crop, ImageNet mean/std
normalisation), is flattened, centred by the mean training image and L2-normalised, so the dot
product in :func:`~mugs.eval.knn.knn_classify` is the cosine similarity of centred pixels; the
same k's and temperature as the feature kNN. What any learned representation should beat.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from mugs.eval.knn import knn_classify


@torch.no_grad()
def flat_pixels(ds: Dataset, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's (transformed) images flattened to rows, and their labels."""
    xs, ys = [], []
    for x, y in DataLoader(ds, batch_size=batch_size, shuffle=False):
        xs.append(x.flatten(1).float())
        ys.append(torch.as_tensor(y))
    return torch.cat(xs), torch.cat(ys)


def centred_unit(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` minus ``mean``, L2-normalised (cosine similarity becomes a dot product)."""
    return F.normalize(x - mean, dim=-1)


@torch.no_grad()
def pixel_knn(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    ks: list[int],
    temperature: float,
    device: torch.device | None = None,
) -> dict[int, float]:
    """Top-1 accuracy (percent) per k of the weighted kNN on centred, normalised pixels."""
    device = device or torch.device("cpu")
    mean = train_x.mean(0, keepdim=True)
    tr = centred_unit(train_x, mean).to(device)
    te = centred_unit(test_x, mean).to(device)
    return knn_classify(tr, train_y.to(device), te, test_y.to(device), ks, temperature)
