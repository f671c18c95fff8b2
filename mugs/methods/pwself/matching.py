"""PW-Self's patch matching: which patches of two views of one image cover the same region.

Javidani et al., "Patch-Wise Self-Supervised Visual Representation Learning: A Fine-Grained
Approach" (arXiv 2310.18651). Each view is a crop of the source image (its box: top, left,
height, width in source pixels) resized to a square grid of ``g x g`` patches and maybe flipped
horizontally. For two views A and B:

1. the overlap of the two boxes in the source image (none: no pair);
2. in each view, the patch rows and columns the overlap covers: for a view with box (t, l, h, w)
   and grid g, rows ``[round(g (top - t) / h), round(g (bottom - t) / h))`` and the same for
   columns, in source order (left to right); a flipped view's source column c is its patch
   column ``g - 1 - c``;
3. each axis on its own, the view with more rows (columns) over the overlap is subsampled to the
   other's count at ``floor(linspace(0, n - 1, m))`` (the authors' choice: evenly spread, first and
   last kept), so both have ``R x C`` patches;
4. the pairs: patch (r, c) of A's selection with patch (r, c) of B's, row-major.

Indices are into each view's row-major patch grid (0-based; a ViT with a CLS token holds patch
``k`` at token ``k + 1``). Differences from the authors' code (alijavidani/
Local_Global_Representation_Learning, ``augment.py``): the ends of the covered range are rounded
(half up) like its start, so a range can never run past the grid (the authors round the start and
the count separately, and slice without a bound); every sample of a batch has its own crops (the
authors draw one geometry per batch); and it is vectorised over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Columns of a geometry row: the crop's box in source pixels and whether the view is flipped.
TOP, LEFT, HEIGHT, WIDTH, FLIP = range(5)
GEOMETRY_COLUMNS = 5


@dataclass
class PatchPairs:
    """Matched patches of two views for a batch: ``a[i, m]`` of view A pairs with ``b[i, m]`` of
    view B where ``valid[i, m]``; padded to the batch's largest count ``M`` (index 0 where not
    valid)."""

    a: torch.Tensor  # [B, M] long
    b: torch.Tensor  # [B, M] long
    valid: torch.Tensor  # [B, M] bool

    def pairs(self, i: int) -> list[tuple[int, int]]:
        """Sample ``i``'s pairs as (index in A, index in B), in order (for tests and plots)."""
        keep = self.valid[i]
        return list(zip(self.a[i][keep].tolist(), self.b[i][keep].tolist(), strict=True))


def _round_half_up(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5).long()


def _covered(lo: torch.Tensor, hi: torch.Tensor, start: torch.Tensor, size: torch.Tensor, grid: int) -> tuple:
    """First patch and count of the patches a view covers of [lo, hi) along one axis."""
    first = _round_half_up(grid * (lo - start) / size).clamp(0, grid)
    last = _round_half_up(grid * (hi - start) / size).clamp(0, grid)
    return first, (last - first).clamp_min(0)


def _subsample(k: torch.Tensor, n: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Position ``k`` of ``m`` evenly spread over ``n >= m`` places: floor(k (n - 1) / (m - 1))."""
    spread = torch.div(k * (n - 1).clamp_min(0), (m - 1).clamp_min(1), rounding_mode="floor")
    return torch.where(m > 1, spread, torch.zeros_like(k))


def match_patches(geo_a: torch.Tensor, grid_a: int, geo_b: torch.Tensor, grid_b: int) -> PatchPairs:
    """The matched patches of views A and B of each sample. ``geo_*``: [B, 5] rows (top, left,
    height, width, flip) in source pixels; ``grid_*``: patches per side of each view."""
    geo_a, geo_b = geo_a.double(), geo_b.double()
    top = torch.maximum(geo_a[:, TOP], geo_b[:, TOP])
    bottom = torch.minimum(geo_a[:, TOP] + geo_a[:, HEIGHT], geo_b[:, TOP] + geo_b[:, HEIGHT])
    left = torch.maximum(geo_a[:, LEFT], geo_b[:, LEFT])
    right = torch.minimum(geo_a[:, LEFT] + geo_a[:, WIDTH], geo_b[:, LEFT] + geo_b[:, WIDTH])
    overlap = (bottom > top) & (right > left)
    spans = []
    for geo, grid in ((geo_a, grid_a), (geo_b, grid_b)):
        r0, nr = _covered(top, bottom, geo[:, TOP], geo[:, HEIGHT], grid)
        c0, nc = _covered(left, right, geo[:, LEFT], geo[:, WIDTH], grid)
        spans.append((r0, nr, c0, nc, geo[:, FLIP] > 0.5, grid))
    rows = torch.minimum(spans[0][1], spans[1][1]) * overlap
    cols = torch.minimum(spans[0][3], spans[1][3]) * overlap
    g = min(grid_a, grid_b)
    k = torch.arange(g).view(1, g, 1)  # selected row
    m = torch.arange(g).view(1, 1, g)  # selected column (source order)
    valid = (k < rows.view(-1, 1, 1)) & (m < cols.view(-1, 1, 1))
    index = []
    for r0, nr, c0, nc, flip, grid in spans:
        r = r0.view(-1, 1, 1) + _subsample(k, nr.view(-1, 1, 1), rows.view(-1, 1, 1))
        c = c0.view(-1, 1, 1) + _subsample(m, nc.view(-1, 1, 1), cols.view(-1, 1, 1))
        c = torch.where(flip.view(-1, 1, 1), grid - 1 - c, c)
        index.append((r * grid + c).flatten(1))
    valid = valid.flatten(1)
    width = int(valid.sum(1).max()) if valid.numel() else 0
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)[:, :width]  # valid first, in order
    a, b = (torch.where(valid, idx, 0).gather(1, order) for idx in index)
    return PatchPairs(a=a, b=b, valid=valid.gather(1, order))
