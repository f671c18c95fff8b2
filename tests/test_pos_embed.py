"""Position-embedding resampling for crops of another grid: the DINO formula and timm's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from timm.layers import resample_abs_pos_embed

from mugs.config import ConfigError, build_config
from mugs.models.backbone import ViTBackbone, interpolate_pos_embed_dino

A = -0.75  # PyTorch's bicubic kernel parameter (Keys)


def _keys(s: float) -> float:
    s = abs(s)
    if s <= 1:
        return ((A + 2) * s - (A + 3)) * s * s + 1
    if s < 2:
        return ((A * s - 5 * A) * s + 8 * A) * s - 4 * A
    return 0.0


def _axis_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] bicubic weights for the factor (n_out + 0.1) / n_in, half-pixel centres,
    the source position set by the factor (not by n_out / n_in), borders replicated."""
    step = n_in / (n_out + 0.1)
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = (i + 0.5) * step - 0.5
        base = math.floor(src)
        for k in range(-1, 3):
            m[i, min(max(base + k, 0), n_in - 1)] += _keys(src - (base + k))
    return m


def _reference(pos: torch.Tensor, new: tuple[int, int], old: tuple[int, int]) -> torch.Tensor:
    """The DINO resampling written out: class part kept, patch grid resampled per axis."""
    grid = pos[0, 1:].double().numpy().reshape(old[0], old[1], -1)  # [H0, W0, D]
    mh, mw = _axis_matrix(old[0], new[0]), _axis_matrix(old[1], new[1])
    out = np.einsum("ih,hwd,jw->ijd", mh, grid, mw).reshape(new[0] * new[1], -1)
    return torch.cat([pos[0, :1].double(), torch.from_numpy(out)])[None]


def _backbone(mode: str) -> ViTBackbone:
    torch.manual_seed(0)
    bb = ViTBackbone(
        "vit_tiny", img_size=16, patch_size=4, embed_dim=8, depth=1, num_heads=2, pos_embed_interp=mode
    )
    with torch.no_grad():
        bb.vit.pos_embed.normal_()  # unit-scale values: differences are not hidden by a 0.02 std
    return bb.eval()


def _added_pos(bb: ViTBackbone, x: torch.Tensor) -> torch.Tensor:
    """What the backbone adds to [cls; patch embeddings] before the first block."""
    v = bb.vit
    patches = v.patch_embed(x)
    b, h, w, d = patches.shape
    plain = torch.cat([v.cls_token.expand(b, -1, -1), patches.reshape(b, h * w, d)], dim=1)
    return (bb.embed(x) - plain)[:1]


@pytest.mark.parametrize("new", [(2, 2), (3, 3), (2, 3), (3, 2), (6, 5)])
def test_dino_formula_matches_hand_written_reference(new):
    torch.manual_seed(1)
    pos = torch.randn(1, 1 + 16, 5)
    got = interpolate_pos_embed_dino(pos, new, (4, 4))
    assert got.shape == (1, 1 + new[0] * new[1], 5)
    torch.testing.assert_close(got.double(), _reference(pos, new, (4, 4)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("hw", [(8, 8), (12, 12), (8, 12), (24, 20)])
def test_backbone_dino_mode_adds_the_reference(hw):
    bb = _backbone("dino")
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        added = _added_pos(bb, x)
        ref = _reference(bb.vit.pos_embed.detach(), (hw[0] // 4, hw[1] // 4), (4, 4))
        torch.testing.assert_close(added.double(), ref, atol=1e-5, rtol=0)
        pre, post = bb(x)
        assert pre.shape == post.shape == (2, 1 + (hw[0] // 4) * (hw[1] // 4), 8)
        outs = bb.last_blocks(x, 1)
        torch.testing.assert_close(outs[-1], post)


def test_stored_grid_is_used_as_is():
    pos = torch.randn(1, 17, 5)
    assert interpolate_pos_embed_dino(pos, (4, 4), (4, 4)) is pos
    bb = _backbone("dino")
    with torch.no_grad():
        torch.testing.assert_close(
            _added_pos(bb, torch.randn(1, 3, 16, 16)), bb.vit.pos_embed, atol=1e-6, rtol=0
        )


def test_dino_mode_differs_from_timm_mode_when_resampling():
    with torch.no_grad():
        x = torch.randn(1, 3, 8, 8)
        assert (_added_pos(_backbone("dino"), x) - _added_pos(_backbone("timm"), x)).abs().max() > 1e-2


@pytest.mark.parametrize("hw", [(8, 8), (12, 12), (8, 12), (16, 16)])
def test_timm_mode_matches_timm_resampling(hw):
    bb = _backbone("timm")
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        want = resample_abs_pos_embed(bb.vit.pos_embed, new_size=[hw[0] // 4, hw[1] // 4], old_size=[4, 4])
        torch.testing.assert_close(_added_pos(bb, x), want, atol=1e-6, rtol=0)
        v = bb.vit
        torch.testing.assert_close(bb.embed(x), v._pos_embed(v.patch_embed(x)), atol=0, rtol=0)


def test_gradient_reaches_pos_embed_through_resampling():
    bb = _backbone("dino")
    bb(torch.randn(1, 3, 8, 12))[1].sum().backward()
    assert bb.vit.pos_embed.grad is not None and bb.vit.pos_embed.grad[0, 1:].abs().sum() > 0


def test_config_key_is_validated():
    assert build_config("demo", None, []).model.pos_embed_interp == "dino"
    assert build_config("demo", None, ["model.pos_embed_interp=timm"]).model.pos_embed_interp == "timm"
    with pytest.raises(ConfigError, match="model.pos_embed_interp"):
        build_config("demo", None, ["model.pos_embed_interp=bilinear"])
    with pytest.raises(ValueError, match="pos_embed_interp"):
        ViTBackbone(
            "vit_tiny", img_size=16, patch_size=4, embed_dim=8, depth=1, num_heads=2, pos_embed_interp="x"
        )
