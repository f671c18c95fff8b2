"""PW-Self's per-patch photometric augmentation: after the spatial augmentation, every patch of
a view's patch grid is colour-jittered on its own (Javidani et al., arXiv 2310.18651: "each patch
is individually augmented, independent from other patches within the same view"). The authors'
repository does not contain it; this is our reading of the paper.

Each patch draws, independently: whether it is jittered (``jitter_p``), brightness, contrast,
saturation and hue factors and the order of the four (torchvision's ``ColorJitter`` sampling,
contrast around the patch's own mean grey), and whether it turns grey (``gray_p``). The
operations are those of the image-level tensor views (:mod:`mugs.data.tensor_views`) applied with
the patches as the batch. The strengths and probabilities default to the image-level ones of
DINO and Mugs (0.4, 0.4, 0.2, 0.1; 0.8; 0.2): the paper's per-patch values are not in the text
we could read.

Reproducible from a seed: parameters come from a ``torch.Generator`` (the data pipeline seeds one
per sample from the sample's own RNG).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mugs.data.tensor_views import (
    _BRIGHT,
    _CONTRAST,
    _GRAY,
    _HUE,
    _JITTER,
    _ORDER,
    _SAT,
    N_PARAMS,
    color_jitter,
    grayscale,
)


@dataclass(frozen=True)
class PatchJitter:
    """Strengths (as torchvision's ``ColorJitter``) and probabilities of the per-patch jitter."""

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    jitter_p: float = 0.8
    gray_p: float = 0.2

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Parameter rows [n, N_PARAMS] (the tensor views' columns) for ``n`` patches."""
        u = torch.rand(n, 6, generator=gen, dtype=torch.float64)
        p = torch.zeros(n, N_PARAMS, dtype=torch.float64)
        p[:, _JITTER] = (u[:, 0] < self.jitter_p).double()
        p[:, _BRIGHT] = 1 + self.brightness * (2 * u[:, 1] - 1)
        p[:, _CONTRAST] = 1 + self.contrast * (2 * u[:, 2] - 1)
        p[:, _SAT] = 1 + self.saturation * (2 * u[:, 3] - 1)
        p[:, _HUE] = self.hue * (2 * u[:, 4] - 1)
        p[:, _GRAY] = (u[:, 5] < self.gray_p).double()
        p[:, _ORDER] = torch.argsort(torch.rand(n, 4, generator=gen), dim=1).double()
        return p

    def apply(self, x: torch.Tensor, size: int, params: torch.Tensor) -> torch.Tensor:
        """:func:`jitter_patches` (what the tensor views call for a view)."""
        return jitter_patches(x, size, params)


def patches(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B * (H / size) * (W / size), C, size, size], row-major patches."""
    b, c, h, w = x.shape
    if h % size or w % size:
        raise ValueError(f"a {h}x{w} view is not a whole number of {size}-px patches")
    grid = x.reshape(b, c, h // size, size, w // size, size).permute(0, 2, 4, 1, 3, 5)
    return grid.reshape(-1, c, size, size)


def unpatch(p: torch.Tensor, batch: int, h: int, w: int) -> torch.Tensor:
    """The inverse of :func:`patches`."""
    c, size = p.shape[1], p.shape[2]
    grid = p.reshape(batch, h // size, w // size, c, size, size).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(batch, c, h, w)


def jitter_patches(x: torch.Tensor, size: int, params: torch.Tensor) -> torch.Tensor:
    """Views ``x`` ([B, 3, H, W] in [0, 1], before normalisation) with each ``size``-px patch
    jittered by its row of ``params`` ([B, n_patches, N_PARAMS], :meth:`PatchJitter.draw`)."""
    b, _, h, w = x.shape
    p = patches(x, size)
    rows = params.reshape(-1, N_PARAMS)
    if rows.shape[0] != p.shape[0]:
        raise ValueError(f"{rows.shape[0]} parameter rows for {p.shape[0]} patches")
    p = color_jitter(p, rows)
    p = torch.where((rows[:, _GRAY] > 0).view(-1, 1, 1, 1), grayscale(p).expand_as(p), p)
    return unpatch(p, b, h, w)
