"""UniVIP's instances: boxes inside the region two scene views share, and their features pooled
from a view's patch tokens.

The paper proposes instances with selective search inside the overlap of the two scene views,
the views redrawn until it holds K of them. Its full text was not available to us: this follows
the unofficial implementation utkutpcgl/UniVIP at 0d09c74
(README: selective-search proposals filtered at 96 px, 64 px as the fallback; ``transforms.py``:
K = 4). Here, by default, the K boxes are drawn at random inside the
overlap with each sample's own generator (reproducible, independent of batching and resume):

- the overlap of two crop boxes (top, left, height, width in source pixels) is their
  intersection; the data pipeline redraws the second view (up to :data:`OVERLAP_TRIES` times)
  until the two overlap, and marks the sample's instances invalid if they never do;
- each box covers a fraction ``s ~ U(scale)`` of the overlap's area with aspect ratio ``r``
  log-uniform in [1/2, 2] (clamped to the overlap), its position uniform inside the overlap.

A box's feature in one view is the area-weighted mean of that view's patch tokens (RoI pooling on
the token grid): the box is mapped into the view's grid (the view's crop box and flip), and every
patch cell weighs the area it shares with the box. A box aligned with cells gives the plain mean
of the tokens it covers. The unofficial implementation instead crops each instance from the
image and encodes it at 96 x 96 px; pooling from the scene's tokens costs no extra forward pass.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

OVERLAP_TRIES = 10
BOX_COLUMNS = 4  # top, left, height, width in source pixels
_ASPECT = (math.log(1 / 2), math.log(2))


def overlap(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float] | None:
    """Intersection (top, left, height, width) of two boxes; None when their area is 0."""
    top, left = max(a[0], b[0]), max(a[1], b[1])
    bottom, right = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    if bottom <= top or right <= left:
        return None
    return top, left, bottom - top, right - left


def draw_boxes(rng: random.Random, region: Sequence[float], k: int, scale: Sequence[float]) -> list[list[float]]:
    """``k`` boxes inside ``region`` (top, left, height, width), drawn from ``rng``."""
    top, left, h, w = region
    out = []
    for _ in range(k):
        area = h * w * rng.uniform(scale[0], scale[1])
        ratio = math.exp(rng.uniform(*_ASPECT))
        bh, bw = min(h, math.sqrt(area / ratio)), min(w, math.sqrt(area * ratio))
        out.append([top + rng.uniform(0, h - bh), left + rng.uniform(0, w - bw), bh, bw])
    return out


def _cell_weights(lo: torch.Tensor, hi: torch.Tensor, grid: int) -> torch.Tensor:
    """[..., grid]: the length of [lo, hi) inside each unit cell [c, c + 1)."""
    cells = torch.arange(grid, dtype=lo.dtype, device=lo.device)
    return (torch.minimum(hi.unsqueeze(-1), cells + 1) - torch.maximum(lo.unsqueeze(-1), cells)).clamp_min(0)


def pool_boxes(tokens: torch.Tensor, geometry: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Features [B, K, D] of ``boxes`` [B, K, 4] (source pixels) from one view's patch tokens
    [B, g * g, D] (row-major), the view's geometry rows [B, 5] (top, left, height, width, flip;
    :mod:`mugs.methods.pwself.matching`'s columns). A box outside the view pools to 0."""
    b, n, d = tokens.shape
    g = math.isqrt(n)
    geo = geometry.to(tokens.dtype).unsqueeze(1)  # [B, 1, 5]
    bx = boxes.to(tokens.dtype)
    y0 = (bx[..., 0] - geo[..., 0]) / geo[..., 2] * g
    y1 = (bx[..., 0] + bx[..., 2] - geo[..., 0]) / geo[..., 2] * g
    x0 = (bx[..., 1] - geo[..., 1]) / geo[..., 3] * g
    x1 = (bx[..., 1] + bx[..., 3] - geo[..., 1]) / geo[..., 3] * g
    flip = geo[..., 4] > 0.5
    x0, x1 = torch.where(flip, g - x1, x0), torch.where(flip, g - x0, x1)
    wy, wx = _cell_weights(y0, y1, g), _cell_weights(x0, x1, g)  # [B, K, g]
    weights = wy.unsqueeze(-1) * wx.unsqueeze(-2)  # [B, K, g, g]
    weights = weights / weights.sum((-2, -1), keepdim=True).clamp_min(1e-12)
    return torch.einsum("bkrc,brcd->bkd", weights, tokens.reshape(b, g, g, d))
