"""Loss weights: a zero weight removes its branch; non-zero weights scale gradients as stated."""

import pytest
import torch

from mugs.engine import Trainer
from tests.helpers import demo_config, real_batch


def _grads(weights, batch, tmp_path, *extra):
    cfg = demo_config(f"method.loss_weights={weights}", "train.clip_grad=0", *extra)
    tr = Trainer(cfg, tmp_path, iters_per_epoch=10)
    crops, weak = batch
    t_out = tr.teacher(crops[:2], tr.teacher_memory, target=True)
    s_out = tr.student(crops[2:], tr.student_memory, target=False)
    total, terms = tr.loss(s_out, t_out, len(crops) - 2, epoch=5)
    total.backward()
    grads = {n: p.grad.clone() for n, p in tr.student.named_parameters() if p.grad is not None}
    return grads, {k: v.item() for k, v in terms.items()}


def test_weights_scale_branch_gradients(tmp_path):
    # without BatchNorm in the heads: BN makes the gradients of the layers before it nearly zero
    # (scale invariance), so a ratio of them would measure round-off
    no_bn = "model.use_bn_in_head=false"
    cfg = demo_config(no_bn)
    batch = real_batch(cfg, 8)
    g1, t1 = _grads([1, 1, 1], batch, tmp_path / "a", no_bn)
    g2, t2 = _grads([2, 1, 1], batch, tmp_path / "b", no_bn)
    assert t1 == pytest.approx(t2)  # same initialisation, same data, same per-branch losses
    # instance head receives only the instance term: weight 1/3 -> 2/4, ratio 1.5
    inst = [n for n in g1 if n.startswith("instance_head.")]
    grp = [n for n in g1 if n.startswith("group_head.projector")]
    assert inst and grp
    for n in inst:
        torch.testing.assert_close(g2[n], 1.5 * g1[n], rtol=1e-4, atol=1e-7)
    # group head: 1/3 -> 1/4, ratio 0.75
    for n in grp:
        torch.testing.assert_close(g2[n], 0.75 * g1[n], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "weights, absent",
    [([1, 0, 1], "local_group"), ([0, 1, 1], "instance_head"), ([1, 1, 0], "group_head")],
)
def test_zero_weight_branch_is_not_built_or_run(weights, absent, tmp_path):
    cfg = demo_config(f"method.loss_weights={weights}")
    tr = Trainer(cfg, tmp_path, iters_per_epoch=10)
    for net in (tr.student, tr.teacher):
        assert getattr(net, absent) is None
        assert not [n for n, _ in net.named_parameters() if n.startswith(absent)]
    loss_name = {"local_group": "local_group", "instance_head": "instance", "group_head": "group"}[absent]
    assert getattr(tr.loss, loss_name) is None
    if absent == "local_group":
        assert tr.student_memory is None and tr.teacher_memory is None

    calls = []
    hooks = [
        m.register_forward_hook(lambda m, i, o, name=name: calls.append(name))
        for name, m in tr.student.named_modules()
        if name
    ]
    crops, weak = real_batch(cfg, 4)
    metrics = tr.train_step(crops, weak)
    for h in hooks:
        h.remove()
    assert calls, "hooks saw the forward"
    assert not [c for c in calls if c.startswith(absent)]
    assert f"loss/{loss_name}" not in metrics
    assert all(f"loss/{k}" in metrics for k in ("instance", "local_group", "group") if k != loss_name)


def test_with_binary_weights_total_equals_official_sum_over_active():
    """Official: total = (sum of active losses) / (sum of weights); equal for 0/1 weights."""
    from mugs.losses.multi_granular import MultiGranularLoss
    from mugs.models.network import MugsOutput

    cfg = demo_config("method.loss_weights=[1,0,1]")
    mgl = MultiGranularLoss(cfg)
    g = torch.Generator().manual_seed(0)
    d, C, B = cfg.model.instance_out_dim, cfg.model.group_out_dim, 2
    s = MugsOutput(
        torch.nn.functional.normalize(torch.randn(4 * B, d, generator=g), dim=-1),
        None,
        torch.randn(4 * B, C, generator=g),
        None,
    )
    t = MugsOutput(
        torch.nn.functional.normalize(torch.randn(2 * B, d, generator=g), dim=-1),
        None,
        torch.randn(2 * B, C, generator=g),
        None,
    )
    total, terms = mgl(s, t, 4, 0)
    official = (terms["instance"] + terms["group"]) / 2.0
    assert torch.allclose(total, official)
