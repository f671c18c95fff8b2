"""PW-Self's patch matching on hand-built views, against index pairs worked out by hand.

Geometry rows are (top, left, height, width, flip) in source pixels; indices are row-major in
each view's patch grid."""

from __future__ import annotations

import torch

from mugs.methods.pwself.matching import match_patches


def _geo(*rows: tuple[float, float, float, float, int]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def _pairs(a, grid_a, b, grid_b, i=0):
    return match_patches(_geo(a), grid_a, _geo(b), grid_b).pairs(i)


def test_identical_views_match_patch_for_patch():
    assert _pairs((0, 0, 32, 32, 0), 4, (0, 0, 32, 32, 0), 4) == [(i, i) for i in range(16)]


def test_a_shifted_view():
    # B starts 8 px (one patch of A) lower and to the right: A's rows/cols 1..3 are B's 0..2
    want = [((r + 1) * 4 + c + 1, r * 4 + c) for r in range(3) for c in range(3)]
    assert _pairs((0, 0, 32, 32, 0), 4, (8, 8, 32, 32, 0), 4) == want


def test_a_zoomed_crop_is_subsampled():
    # B is A's top-left quarter at the same grid: A covers 2 x 2 of it, B all 4 x 4, so B's rows and
    # columns are taken at floor(linspace(0, 3, 2)) = [0, 3]
    assert _pairs((0, 0, 32, 32, 0), 4, (0, 0, 16, 16, 0), 4) == [(0, 0), (1, 3), (4, 12), (5, 15)]


def test_a_horizontal_flip_mirrors_columns():
    want = [(r * 4 + c, r * 4 + 3 - c) for r in range(4) for c in range(4)]
    assert _pairs((0, 0, 32, 32, 0), 4, (0, 0, 32, 32, 1), 4) == want
    # both flipped: each patch with itself, listed in source order (left to right in the image)
    want = [(r * 4 + 3 - c, r * 4 + 3 - c) for r in range(4) for c in range(4)]
    assert _pairs((0, 0, 32, 32, 1), 4, (0, 0, 32, 32, 1), 4) == want


def test_different_resolutions():
    # the same box at 4 x 4 and 2 x 2 patches: A's rows/cols at floor(linspace(0, 3, 2)) = [0, 3]
    assert _pairs((0, 0, 32, 32, 0), 4, (0, 0, 32, 32, 0), 2) == [(0, 0), (3, 1), (12, 2), (15, 3)]
    # and the other way round
    assert _pairs((0, 0, 32, 32, 0), 2, (0, 0, 32, 32, 0), 4) == [(0, 0), (1, 3), (2, 12), (3, 15)]


def test_no_overlap_gives_no_pair_and_a_batch_pads():
    far = match_patches(_geo((0, 0, 10, 10, 0)), 4, _geo((20, 20, 10, 10, 0)), 4)
    assert far.pairs(0) == [] and far.a.shape == (1, 0)
    touching = match_patches(_geo((0, 0, 10, 10, 0)), 4, _geo((0, 10, 10, 10, 0)), 4)
    assert touching.pairs(0) == [], "boxes that only share an edge share no patch"
    batch = match_patches(
        _geo((0, 0, 32, 32, 0), (0, 0, 10, 10, 0)), 4, _geo((8, 8, 32, 32, 0), (20, 20, 10, 10, 0)), 4
    )
    assert batch.a.shape == (2, 9) and batch.valid.sum(1).tolist() == [9, 0]
    assert batch.pairs(0) == _pairs((0, 0, 32, 32, 0), 4, (8, 8, 32, 32, 0), 4)


def test_matched_patches_cover_the_same_source_region():
    """Random crops: each matched pair's patch centres lie within one (larger) patch of each other
    in the source image, mirrored columns included."""
    g = torch.Generator().manual_seed(0)
    n, grid_a, grid_b = 64, 7, 3
    def crops(min_side: float) -> torch.Tensor:
        side = min_side + (100 - min_side) * torch.rand(n, 2, generator=g)
        corner = (100 - side) * torch.rand(n, 2, generator=g)
        flip = (torch.rand(n, 1, generator=g) < 0.5).float()
        return torch.cat([corner, side, flip], dim=1)

    a, b = crops(40), crops(20)
    pp = match_patches(a, grid_a, b, grid_b)
    checked = 0
    for i in range(n):
        for ia, ib in pp.pairs(i):
            ca = _centre(a[i], ia, grid_a)
            cb = _centre(b[i], ib, grid_b)
            tol = max(a[i, 2] / grid_a, a[i, 3] / grid_a, b[i, 2] / grid_b, b[i, 3] / grid_b)
            assert (ca - cb).abs().max() <= tol, (i, ia, ib, ca, cb)
            checked += 1
    assert checked > 100


def _centre(geo: torch.Tensor, index: int, grid: int) -> torch.Tensor:
    """Source-pixel centre of patch ``index`` of a view."""
    r, c = divmod(index, grid)
    if geo[4] > 0.5:
        c = grid - 1 - c
    return torch.stack([geo[0] + (r + 0.5) * geo[2] / grid, geo[1] + (c + 0.5) * geo[3] / grid])
