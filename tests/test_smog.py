"""SMoG's parts against hand-computed values on tiny tensors, and its step through the engine."""

import math

import pytest
import torch
import torch.nn.functional as F

from mugs.config import build_config
from mugs.engine import Trainer
from mugs.errors import ConfigError
from mugs.methods.smog.groups import GroupFeatures, assign, momentum_update, spherical_kmeans
from mugs.methods.smog.loss import GroupContrastLoss
from tests.helpers import losses_with_and_without_resume, real_batch

E = torch.eye(3)


def test_assignment_is_the_nearest_group_by_cosine():
    groups = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    z = torch.tensor([[10.0, 1, 0], [0.1, 0.2, 0], [0, -1, -0.5], [1, 1, 1.01]])
    assert assign(z, groups).tolist() == [0, 1, 0, 2]  # length does not matter, direction does


def test_momentum_update_moves_assigned_groups_only_by_hand():
    groups = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    z = torch.tensor([[2.0, 0, 0], [0, 0, 3.0], [0, 0.6, 0.8]])  # unit: e0, e2, (0, .6, .8)
    a = torch.tensor([0, 2, 2])
    got = momentum_update(groups, z, a, beta=0.5)
    # g0 = e0 (mean e0, unchanged direction); g1 untouched; g2 = norm(.5 e2 + .5 (0, .3, .9))
    g2 = torch.tensor([0.0, 0.15, 0.95])
    g2 = g2 / g2.norm()
    torch.testing.assert_close(got, torch.stack([E[0], E[1], g2]))
    assert torch.equal(momentum_update(groups, z, a, beta=1.0), groups), "beta 1 keeps the groups"


def test_loss_is_the_symmetrised_cross_entropy_by_hand():
    groups = torch.tensor([[1.0, 0], [0, 1.0]])
    p1, p2 = torch.tensor([[1.0, 0]]), torch.tensor([[0.6, 0.8]])
    a1, a2 = torch.tensor([0]), torch.tensor([1])
    tau = 0.5
    loss = GroupContrastLoss(tau)((p1, p2), (a1, a2), groups)
    # p1 against a2 = 1: logits (2, 0) -> -log(e^0 / (e^2 + e^0)); p2 against a1 = 0: logits (1.2, 1.6)
    l12 = -math.log(1 / (math.exp(2) + 1))
    l21 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(1.6)))
    assert loss.item() == pytest.approx((l12 + l21) / 2, rel=1e-6)
    swapped = GroupContrastLoss(tau)((p2, p1), (a2, a1), groups)
    assert swapped.item() == pytest.approx(loss.item(), rel=1e-6), "the two views play the same role"
    # each prediction is judged against the *other* view's assignment
    same_view = GroupContrastLoss(tau)((p1, p2), (a2, a1), groups).item()
    assert same_view != pytest.approx(loss.item())


def test_kmeans_reset_finds_the_clusters_of_a_bank():
    gen = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]), dim=-1)
    bank = torch.cat([c + 0.05 * torch.randn(40, 4, generator=gen) for c in centres])
    found = spherical_kmeans(bank, 3, iters=10, generator=torch.Generator().manual_seed(1))
    match = (found @ centres.T).max(dim=0).values
    assert (match > 0.99).all(), (found, match)

    g = GroupFeatures(3, 4, bank_size=200, generator=torch.Generator().manual_seed(2))
    assert not g.reset(10, torch.Generator().manual_seed(1)), "an empty bank does not reset"
    g.enqueue(bank)
    assert int(g.bank_filled) == 120 and int(g.bank_ptr) == 120
    assert g.reset(10, torch.Generator().manual_seed(1))
    assert ((g.groups @ centres.T).max(dim=0).values > 0.99).all()


def test_bank_is_a_fifo_of_unit_rows():
    g = GroupFeatures(2, 2, bank_size=3, generator=torch.Generator().manual_seed(0))
    g.enqueue(torch.tensor([[2.0, 0], [0, 3.0]]))
    g.enqueue(torch.tensor([[-1.0, 0], [0, -1.0]]))
    torch.testing.assert_close(g.bank, torch.tensor([[0, -1.0], [0, 1.0], [-1.0, 0]]))
    assert int(g.bank_ptr) == 1 and int(g.bank_filled) == 3


def test_smog_step_moves_groups_and_reset_resyncs_the_momentum_encoder():
    cfg = build_config(
        "smog_demo", None, ["method.reset_every=2", "method.bank_size=128", "method.n_groups=16"]
    )
    tr = Trainer(cfg, "/nonexistent-unused")
    crops, weak = real_batch(cfg, 32)
    assert len(crops) == 2, "SMoG draws two views; both networks see both"
    before = tr.method.groups.groups.clone()
    m = tr.train_step(crops, weak, diagnose=True)
    assert not torch.equal(before, tr.method.groups.groups), "the groups move every step"
    assert {"loss/smog", "diag/smog/target_std", "diag/smog/batch_entropy"} <= set(m)
    assert not any(k.startswith("diag/instance") for k in m)
    assert int(tr.method.groups.bank_filled) == 64
    tr.train_step(crops, weak)  # step 2: reset (bank 128 >= 16 groups) and re-synchronisation
    t, s = tr.teacher.state_dict(), tr.student.state_dict()
    assert all(torch.equal(v, s[k]) for k, v in t.items()), "momentum encoder = online encoder after a reset"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method.name=smog", "data.local_crops_number=2"], "two global views"),
        (["method.name=smog", "method.group_momentum=1.0"], r"method.group_momentum: must be in \[0, 1\)"),
        (["method.name=smog", "method.n_groups=0"], "method.n_groups: must be > 0"),
        (["method.name=smog", "method.bank_size=10", "method.n_groups=20"], "cannot seed"),
        (["method.name=nope"], "unknown method 'nope' \\(known: mugs, pwself, smog, univip\\)"),
        (["method.name=smog", "method.topk=3"], "method.topk: unknown key"),
    ],
)
def test_bad_smog_settings_name_their_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_config("demo", None, overrides)


def test_smog_resume_is_bit_exact(tmp_path):
    over = [
        "train.max_steps=6",
        "train.log_every=1",
        "data.subset=256",
        "train.epochs=2",
        "method.reset_every=4",
        "method.bank_size=128",
        "method.n_groups=16",
    ]

    a, b = losses_with_and_without_resume(lambda: build_config("smog_demo", None, over), tmp_path, steps=6, stop_at=3)
    assert a == b
