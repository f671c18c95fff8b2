"""PW-Self's per-patch photometric augmentation: patches change independently, reproducibly from
the seed, and not at all when it is off."""

from __future__ import annotations

import torch

from mugs.data.patch_jitter import PatchJitter, jitter_patches, patches, unpatch
from mugs.data.tensor_views import _BRIGHT, _GRAY, _JITTER

SIZE, GRID = 4, 4  # 16 x 16 views of 4 x 4 patches


def _flat(batch: int = 2) -> torch.Tensor:
    """A flat orange image: every patch starts with the same colour."""
    return torch.tensor([0.9, 0.5, 0.2]).view(1, 3, 1, 1).expand(batch, 3, 16, 16).clone()


def _params(aug: PatchJitter, seed: int, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return aug.draw(batch * GRID * GRID, g).view(batch, GRID * GRID, -1)


def _patch_colours(x: torch.Tensor) -> torch.Tensor:
    """Mean colour of every patch, [B * patches, 3]."""
    return patches(x, SIZE).mean(dim=(2, 3))


def test_patches_round_trip():
    x = torch.rand(3, 3, 16, 12)
    assert torch.equal(unpatch(patches(x, SIZE), 3, 16, 12), x)
    assert torch.equal(patches(x, SIZE)[1], x[0, :, 0:4, 4:8]), "row-major: patch 1 is row 0, column 1"


def test_patches_of_a_flat_image_end_with_different_colours():
    aug = PatchJitter(jitter_p=1.0, gray_p=0.0)
    out = jitter_patches(_flat(), SIZE, _params(aug, seed=0))
    colours = _patch_colours(out)
    assert torch.unique(colours.round(decimals=4), dim=0).shape[0] == colours.shape[0], "all differ"
    for p in patches(out, SIZE):  # each patch stays flat: one colour per patch
        assert (p - p.mean(dim=(1, 2), keepdim=True)).abs().max() < 1e-5
    assert out.min() >= 0 and out.max() <= 1


def test_each_patch_depends_on_its_own_parameters_only():
    aug = PatchJitter(jitter_p=1.0, gray_p=0.5)
    x = torch.rand(2, 3, 16, 16)
    params = _params(aug, seed=1)
    changed = params.clone()
    changed[1, 5] = aug.draw(1, torch.Generator().manual_seed(99))[0]  # sample 1, patch 5
    a, b = patches(jitter_patches(x, SIZE, params), SIZE), patches(jitter_patches(x, SIZE, changed), SIZE)
    differs = (a - b).flatten(1).abs().amax(1) > 0
    assert differs.nonzero().flatten().tolist() == [GRID * GRID + 5]


def test_reproducible_from_the_seed():
    aug = PatchJitter()
    x = torch.rand(2, 3, 16, 16)
    one = jitter_patches(x, SIZE, _params(aug, seed=3))
    assert torch.equal(one, jitter_patches(x, SIZE, _params(aug, seed=3)))
    assert not torch.equal(one, jitter_patches(x, SIZE, _params(aug, seed=4)))


def test_off_leaves_the_view_as_it_was():
    x = torch.rand(2, 3, 16, 16)
    out = jitter_patches(x, SIZE, _params(PatchJitter(jitter_p=0.0, gray_p=0.0), seed=5))
    assert torch.equal(out, x)


def test_probabilities_are_respected():
    rows = PatchJitter(jitter_p=0.8, gray_p=0.2).draw(20_000, torch.Generator().manual_seed(0))
    assert abs(rows[:, _JITTER].mean().item() - 0.8) < 0.02
    assert abs(rows[:, _GRAY].mean().item() - 0.2) < 0.02
    assert rows[:, _BRIGHT].min() >= 0.6 and rows[:, _BRIGHT].max() <= 1.4
