"""PW-Self: its loss against hand-computed values, its views (geometry, per-patch jitter) through
the real pipeline, and resume."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from mugs.config import build_config
from mugs.data.datasets import load_split
from mugs.data.pipeline import multicrop_dataset
from mugs.data.tensor_views import ViewExtras
from mugs.methods.pwself.loss import PatchWiseLoss
from mugs.methods.pwself.matching import PatchPairs
from tests.helpers import losses_with_and_without_resume


def test_loss_against_hand_computed_values():
    """K = 2 outputs, one patch a view, both temperatures 1, centre 0; two images, the second
    without a matched patch. Teacher CLS [1, 0], patch [0, 2]; student CLS [2, 0], patch [0, 1]:

        H(cls)   = ln(e^2 + 1) - 2 e / (e + 1)
        H(patch) = ln(1 + e) - e^2 / (1 + e^2)
        L_image  = H(cls) (both images), L_patch = (H(patch) + 0) / 2 (image 2 adds 0)
    """
    t = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).expand(2, 2, 2)
    s = torch.tensor([[2.0, 0.0], [0.0, 1.0]]).expand(2, 2, 2)
    e = math.e
    h_cls = math.log(e**2 + 1) - 2 * e / (e + 1)
    h_patch = math.log(1 + e) - e**2 / (1 + e**2)
    pp = PatchPairs(a=torch.zeros(2, 1, dtype=torch.long), b=torch.zeros(2, 1, dtype=torch.long),
                    valid=torch.tensor([[True], [False]]))
    loss = PatchWiseLoss(out_dim=2, n_positions=2, student_temp=1.0, center_momentum=0.9,
                         image_weight=0.5, patch_weight=2.0)
    total, terms = loss([t, t], [s, s], {(0, 1): pp, (1, 0): pp}, teacher_temp=1.0)
    assert terms["pw_image"].item() == pytest.approx(h_cls, rel=1e-6)
    assert terms["pw_patch"].item() == pytest.approx(h_patch / 2, rel=1e-6)
    assert total.item() == pytest.approx(0.5 * h_cls + 2.0 * h_patch / 2, rel=1e-6)
    # the centre moved a tenth of the way to the teacher's mean, per position
    torch.testing.assert_close(loss.center, 0.1 * torch.tensor([[1.0, 0.0], [0.0, 2.0]]))


def test_sharpening_and_centring_use_each_position_centre():
    """A centre equal to the teacher's output at each position makes every target uniform,
    p = [1/2, 1/2], whatever the temperature: H = -(log softmax(S)_0 + log softmax(S)_1) / 2,
    which for S = [1, -1] is ln(1 + e^2) - 1."""
    t = torch.tensor([[[3.0, 1.0], [5.0, -5.0]]])
    s = torch.tensor([[[1.0, -1.0], [1.0, -1.0]]])
    loss = PatchWiseLoss(2, 2, student_temp=1.0, center_momentum=0.9, image_weight=1.0, patch_weight=1.0)
    loss.center.copy_(t[0])  # every position centred on itself: uniform targets
    pp = PatchPairs(a=torch.zeros(1, 1, dtype=torch.long), b=torch.zeros(1, 1, dtype=torch.long),
                    valid=torch.ones(1, 1, dtype=torch.bool))
    _, terms = loss([t, t], [s, s], {(0, 1): pp}, teacher_temp=0.5)
    want = math.log(1 + math.e**2) - 1  # -(1/2)(log softmax [1,-1] summed)
    assert terms["pw_image"].item() == pytest.approx(want, rel=1e-6)
    assert terms["pw_patch"].item() == pytest.approx(want, rel=1e-6)


def _views(cfg, extras: ViewExtras | None, seed: int = 0):
    ds, collate = multicrop_dataset(load_split(cfg.data, "train"), cfg.data, seed, student_views=False, extras=extras)
    return next(iter(DataLoader(ds, batch_size=8, shuffle=False, collate_fn=collate)))


def test_views_carry_their_geometry_and_jitter_their_patches():
    cfg = build_config("pwself_demo", None, [])
    plain = _views(cfg, None)
    geo_only = _views(cfg, ViewExtras(geometry=True, patch_size=4))
    assert len(plain) == 2 and len(geo_only) == 3
    for a, b in zip(plain[0], geo_only[0], strict=True):
        assert torch.equal(a, b), "asking for the geometry changes no crop"
    geometry = geo_only[2]["geometry"]
    assert geometry.shape == (8, 2, 5)
    top, left, h, w, flip = geometry.unbind(-1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 16).all() and (left + w <= 16).all()
    assert (h * w >= 0.5 * 256 - 1e-3).all(), "global crops cover at least half the image (scale 0.5-1)"
    assert set(flip.unique().tolist()) <= {0.0, 1.0}

    from mugs.methods.registry import method_class

    extras = method_class("pwself")(cfg).view_extras()
    one, two = _views(cfg, extras), _views(cfg, extras)
    for a, b in zip(one[0], two[0], strict=True):
        assert torch.equal(a, b), "reproducible from the seed"
    assert torch.equal(one[2]["geometry"], geometry), "the per-patch jitter moves no crop"
    assert not torch.equal(one[0][0], plain[0][0]), "the patches were jittered"


def test_resume_is_bit_exact(tmp_path):
    def make():
        return build_config("pwself_demo", None, ["train.max_steps=6", "train.log_every=1", "data.subset=256",
                                                  "train.epochs=2"])

    uninterrupted, resumed = losses_with_and_without_resume(make, tmp_path, steps=6, stop_at=3)
    assert resumed == uninterrupted
