"""Per-tensor gradient clipping: DINO/Mugs' rule (scale a tensor's gradient to norm ``clip`` when it
is larger, leave it alone otherwise), on hand-picked gradients and against the rule applied tensor
by tensor."""

from __future__ import annotations

import torch
from torch import nn

from mugs.optim import clip_gradients_per_tensor


def _model_with_grads(grads: list[torch.Tensor]) -> nn.Module:
    m = nn.Module()
    for i, g in enumerate(grads):
        p = nn.Parameter(torch.zeros_like(g))
        p.grad = g.clone()
        m.register_parameter(f"p{i}", p)
    return m


def test_large_gradients_are_scaled_to_the_clip_small_ones_untouched() -> None:
    m = _model_with_grads([torch.tensor([3.0, 4.0]), torch.tensor([0.6, 0.8]), torch.tensor([[0.0, 0.0]])])
    m.register_parameter("no_grad", nn.Parameter(torch.ones(3)))  # no gradient: skipped
    clip_gradients_per_tensor(m, 2.0)
    coef = 2.0 / (5.0 + 1e-6)
    torch.testing.assert_close(m.p0.grad, torch.tensor([3.0 * coef, 4.0 * coef]))
    assert torch.equal(m.p1.grad, torch.tensor([0.6, 0.8]))  # norm 1 < 2: exactly unchanged
    assert torch.equal(m.p2.grad, torch.zeros(1, 2))
    assert m.no_grad.grad is None


def test_same_numbers_as_the_rule_applied_tensor_by_tensor() -> None:
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(s, generator=gen) * sc for s, sc in [((7, 5), 3.0), ((11,), 0.1), ((4, 4, 3), 1.0)]]
    m = _model_with_grads(grads)
    clip_gradients_per_tensor(m, 1.5)
    for g, p in zip(grads, m.parameters(), strict=True):
        ref = g.clone()
        coef = 1.5 / (ref.norm(2) + 1e-6)
        if coef < 1:
            ref.mul_(coef)
        assert torch.equal(p.grad, ref)
