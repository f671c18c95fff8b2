"""UniVIP: Sinkhorn's plan, the instance boxes and their RoI pooling, the three losses against
hand-computed values, its views through the real pipeline, a step, settings and resume."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch.utils.data import DataLoader

from mugs.config import ConfigError, build_config
from mugs.data.datasets import load_split
from mugs.data.pipeline import multicrop_dataset
from mugs.methods.registry import method_class
from mugs.methods.univip.instances import draw_boxes, overlap, pool_boxes
from mugs.methods.univip.loss import InstanceInstanceLoss, SceneInstanceLoss, SceneSceneLoss
from mugs.methods.univip.sinkhorn import sinkhorn
from tests.helpers import losses_with_and_without_resume

# ------------------------------------------------------------------------------------ Sinkhorn


def _marginals(n: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cost = torch.rand(3, n, m, generator=g, dtype=torch.float64) * 2
    a = torch.rand(3, n, generator=g, dtype=torch.float64) + 0.1
    b = torch.rand(3, m, generator=g, dtype=torch.float64) + 0.1
    return cost, a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)


@pytest.mark.parametrize("eps", [1.0, 0.1, 0.01])
def test_plan_has_the_given_supplies_and_demands(eps):
    cost, a, b = _marginals(4, 5, seed=0)
    plan = sinkhorn(cost, a, b, eps, iters=5000, tol=1e-9)
    torch.testing.assert_close(plan.sum(-1), a, rtol=0, atol=1e-8)
    torch.testing.assert_close(plan.sum(-2), b, rtol=0, atol=1e-8)
    assert (plan >= 0).all()


def test_plan_concentrates_on_an_obvious_assignment():
    """Cost 0 on the permutation 2, 0, 3, 1 and 1 elsewhere, uniform marginals: at small eps the
    plan puts (almost) all of each row's mass on its permuted column."""
    perm = torch.tensor([2, 0, 3, 1])
    cost = torch.ones(4, 4)
    cost[torch.arange(4), perm] = 0
    uniform = torch.full((4,), 0.25)
    plan = sinkhorn(cost, uniform, uniform, eps=0.05, iters=200)
    assert torch.equal(plan.argmax(-1), perm)
    assert plan[torch.arange(4), perm].sum() > 0.999


def test_small_eps_stays_finite_in_float32():
    """At eps 1e-3 the kernel exp(-C / eps) underflows to 0 in float32 (e^-2000); the log-domain
    iterations still give a finite plan with the right marginals (to float32's rounding of
    exponents of order C / eps ~ 10^3: about 1e-4)."""
    cost, a, b = (t.float() for t in _marginals(4, 4, seed=1))
    assert torch.exp(-cost / 1e-3).min() == 0, "the plain kernel would underflow"
    plan = sinkhorn(cost, a, b, eps=1e-3, iters=2000, tol=1e-6)
    assert torch.isfinite(plan).all()
    torch.testing.assert_close(plan.sum(-2), b, rtol=0, atol=1e-4)
    torch.testing.assert_close(plan.sum(-1), a, rtol=0, atol=1e-4)


def test_two_by_two_plan_by_hand():
    """Cost [[0, 1], [1, 0]], uniform marginals: by symmetry T = c [[1, e], [e, 1]] with
    e = exp(-1 / eps) and c = 1 / (2 (1 + e))."""
    eps = 0.5
    e = math.exp(-1 / eps)
    expected = torch.tensor([[1, e], [e, 1]], dtype=torch.float64) / (2 * (1 + e))
    half = torch.full((2,), 0.5, dtype=torch.float64)
    plan = sinkhorn(torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64), half, half, eps, iters=100)
    torch.testing.assert_close(plan, expected, rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------------- instances


def test_overlap_of_two_boxes():
    assert overlap((0, 0, 10, 10), (5, 2, 10, 4)) == (5, 2, 5, 4)
    assert overlap((0, 0, 10, 10), (10, 0, 5, 5)) is None, "touching boxes share no area"
    assert overlap((0, 0, 4, 4), (1, 6, 2, 2)) is None


def test_boxes_lie_inside_the_region_with_their_scale():
    region = (3.0, 5.0, 8.0, 6.0)
    boxes = draw_boxes(random.Random(0), region, 200, (0.1, 0.5))
    for top, left, h, w in boxes:
        assert top >= 3 and left >= 5 and top + h <= 11 + 1e-9 and left + w <= 11 + 1e-9
        assert h * w <= 0.5 * 48 + 1e-9 and h > 0 and w > 0
    assert boxes == draw_boxes(random.Random(0), region, 200, (0.1, 0.5)), "the same seed, the same boxes"
    assert boxes != draw_boxes(random.Random(1), region, 200, (0.1, 0.5))


def _grid_tokens(g: int, d: int = 2) -> torch.Tensor:
    """[1, g * g, d] tokens whose features are (row, column) of their cell."""
    rows, cols = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    return torch.stack([rows, cols], -1).reshape(1, g * g, 2).float()[..., :d]


def test_pooling_an_aligned_box_is_the_mean_of_its_tokens():
    """A 4 x 4 grid over a view whose box is (10, 20, 40, 40) in the source: cells are 10 px. The
    box (20, 30, 20, 30) covers rows 1-2 and columns 1-3."""
    tokens = torch.randn(1, 16, 3, generator=torch.Generator().manual_seed(0))
    geometry = torch.tensor([[10.0, 20.0, 40.0, 40.0, 0.0]])
    box = torch.tensor([[[20.0, 30.0, 20.0, 30.0]]])
    covered = [r * 4 + c for r in (1, 2) for c in (1, 2, 3)]
    torch.testing.assert_close(pool_boxes(tokens, geometry, box)[0, 0], tokens[0, covered].mean(0))


def test_pooling_follows_the_flip_and_weighs_partial_cells():
    g = 4
    tokens = _grid_tokens(g)
    box = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])  # the top-left cell of the source
    plain = pool_boxes(tokens, torch.tensor([[0.0, 0.0, 40.0, 40.0, 0.0]]), box)
    flipped = pool_boxes(tokens, torch.tensor([[0.0, 0.0, 40.0, 40.0, 1.0]]), box)
    assert plain.tolist() == [[[0.0, 0.0]]]
    assert flipped.tolist() == [[[0.0, 3.0]]], "a flipped view holds the source's left at its right"
    # half of cell (0, 0) and all of cell (0, 1): weights 1/3 and 2/3 on columns 0 and 1
    half = pool_boxes(tokens, torch.tensor([[0.0, 0.0, 40.0, 40.0, 0.0]]), torch.tensor([[[0.0, 5.0, 10.0, 15.0]]]))
    torch.testing.assert_close(half, torch.tensor([[[0.0, 2 / 3]]]))
    outside = pool_boxes(tokens, torch.tensor([[0.0, 0.0, 40.0, 40.0, 0.0]]), torch.tensor([[[50.0, 50.0, 5.0, 5.0]]]))
    assert outside.abs().sum() == 0


def _views(cfg, seed: int = 0, n: int = 16):
    extras = method_class("univip")(cfg).view_extras()
    ds, collate = multicrop_dataset(load_split(cfg.data, "train"), cfg.data, seed, student_views=False, extras=extras)
    return next(iter(DataLoader(ds, batch_size=n, shuffle=False, collate_fn=collate)))


def test_views_carry_boxes_inside_their_overlap_reproducibly():
    cfg = build_config("univip_demo", None, ["data.global_crops_scale=[0.1, 0.3]"])  # small views: some redraws
    crops, _, extras = _views(cfg)
    geometry, boxes, valid = extras["geometry"], extras["instances"], extras["instances_valid"]
    assert boxes.shape == (16, 4, 4) and valid.shape == (16,)
    assert valid.any()
    for i in range(16):
        region = overlap(geometry[i, 0, :4].tolist(), geometry[i, 1, :4].tolist())
        assert (region is not None) == bool(valid[i])
        if region is None:
            continue
        t, left, h, w = region
        for bt, bl, bh, bw in boxes[i].tolist():
            assert bt >= t - 1e-4 and bl >= left - 1e-4 and bt + bh <= t + h + 1e-4 and bl + bw <= left + w + 1e-4
    again = _views(cfg)
    assert all(torch.equal(a, b) for a, b in zip(crops, again[0], strict=True))
    assert torch.equal(boxes, again[2]["instances"]), "deterministic from the seed"
    assert not torch.equal(boxes, _views(cfg, seed=1)[2]["instances"])


# -------------------------------------------------------------------------------------- losses


def test_scene_losses_by_hand():
    """q_1 = [1, 0], q_2 = [0, 1], z'_1 = [1, 1], z'_2 = [1, 0]:
    L_ss = (2 - 2 cos(q_1, z'_2)) + (2 - 2 cos(q_2, z'_1)) = 0 + (2 - sqrt 2)."""
    q1, q2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    z1, z2 = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    assert SceneSceneLoss()((q1, q2), (z1, z2)).item() == pytest.approx(2 - math.sqrt(2))
    # scene-instance: the second sample is invalid and does not count
    a1 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    a2 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    zz1, zz2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    got = SceneInstanceLoss()((a1, a2), (zz1, zz2), torch.tensor([True, False]))
    assert got.item() == pytest.approx(0 + 2)


def test_instance_loss_by_hand():
    """K = 2 one-hot instances, the same in both branches; scenes [1, 1] (equal affinities, so
    uniform supplies and demands): C = [[0, 1], [1, 0]], and with eps = 1 the plan is
    [[1, e], [e, 1]] / (2 (1 + e)), e = exp(-1): each direction costs e / (1 + e)."""
    inst = torch.eye(2).unsqueeze(0)  # [1, K, D]
    scene = torch.tensor([[1.0, 1.0]])
    loss = InstanceInstanceLoss(eps=1.0, iters=200)
    e = math.exp(-1)
    got = loss((inst, inst), (inst, inst), (scene, scene), (scene, scene))
    assert got.item() == pytest.approx(2 * e / (1 + e), abs=1e-6)


def test_supplies_and_demands_are_the_affinities_to_the_scenes():
    """Online instances [1, 0] and [0, 1] against a target scene [3, 1]: supplies relu(cos) =
    [3, 1] / sqrt(10), normalised [0.75, 0.25]; target instances [1, 0], [-1, 0] against the
    online scene [1, 0]: demands [1, 0] -> floored and normalised ~[1, 0]."""
    loss = InstanceInstanceLoss(eps=0.5, iters=500)
    online = torch.eye(2).unsqueeze(0)
    target = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
    plan = loss.plan(online, target, torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(plan.sum(-1), torch.tensor([[0.75, 0.25]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(plan.sum(-2), torch.tensor([[1.0, 0.0]]), atol=1e-5, rtol=0)


def test_the_plan_carries_no_gradient_and_the_cost_does():
    g = torch.Generator().manual_seed(0)
    online = torch.randn(2, 3, 8, generator=g, requires_grad=True)
    target, scene = torch.randn(2, 3, 8, generator=g), torch.randn(2, 8, generator=g)
    loss = InstanceInstanceLoss(eps=0.1, iters=50)
    assert not loss.plan(online, target, scene, scene).requires_grad
    out = loss((online, online), (target, target), (scene, scene), (scene, scene))
    out.backward()
    assert online.grad is not None and online.grad.abs().sum() > 0


# ------------------------------------------------------------------------- the method, settings


def test_a_step_logs_the_three_terms_and_moves_the_student(tmp_path):
    from mugs.engine import Trainer
    from tests.helpers import real_batch

    cfg = build_config("univip_demo", None, ["train.batch_size=8", "train.warmup_epochs=0"])
    tr = Trainer(cfg, tmp_path, device=torch.device("cpu"), iters_per_epoch=10)
    before = {k: v.clone() for k, v in tr.student.state_dict().items()}
    crops, weak, extras = real_batch(cfg, 8)
    out = tr.train_step(crops, weak, extras=extras, diagnose=True)
    for term in ("loss/univip_ss", "loss/univip_si", "loss/univip_ii"):
        assert math.isfinite(out[term]) and out[term] >= 0
    assert out["loss"] == pytest.approx(out["loss/univip_ss"] + out["loss/univip_si"] + out["loss/univip_ii"], rel=1e-5)
    for key in ("diag/univip_scene/target_cos", "diag/univip_instance/target_std"):
        assert key in out
    moved = [k for k, v in tr.student.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("aggregator") for k in moved) and any(k.startswith("backbone") for k in moved)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.local_crops_number=2"], "two scene views"),
        (["data.augment_backend=pil"], "UniVIP needs 'tensor'"),
        (["method.n_instances=0"], "method.n_instances: must be > 0"),
        (["method.instance_scale=[0.5, 0.2]"], "method.instance_scale"),
        (["method.sinkhorn_eps=0"], "method.sinkhorn_eps: must be > 0"),
        (["method.scene_weight=0", "method.scene_instance_weight=0", "method.instance_weight=0"], "at least one"),
        (["method.topk=3"], "method.topk: unknown key"),
    ],
)
def test_bad_univip_settings_name_their_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_config("univip_demo", None, overrides)


def test_univip_resume_is_bit_exact(tmp_path):
    over = ["train.max_steps=6", "train.log_every=1", "data.subset=256", "train.epochs=2"]
    a, b = losses_with_and_without_resume(lambda: build_config("univip_demo", None, over), tmp_path, steps=6, stop_at=3)
    assert a == b


@pytest.mark.parametrize("method", ["univip", "pwself"])
def test_a_step_on_an_imagefolder_of_mixed_sizes(tmp_path, method):
    """The ImageNet presets' path at a small size: real photographs of different sizes, the
    tensor views, one training step with finite loss terms."""
    from mugs.engine import Trainer
    from tests.helpers import mixed_size_imagefolder, real_batch

    mixed_size_imagefolder(tmp_path / "folder", per_class=4, classes=2)
    preset = {"univip": "univip_demo", "pwself": "pwself_demo"}[method]
    cfg = build_config(preset, None, ["data.dataset=imagefolder", f"data.root={tmp_path / 'folder'}",
                                      "train.batch_size=8", "train.warmup_epochs=0"])
    tr = Trainer(cfg, tmp_path / "run", device=torch.device("cpu"), iters_per_epoch=1)
    crops, weak, extras = real_batch(cfg, 8)
    out = tr.train_step(crops, weak, extras=extras)
    assert math.isfinite(out["loss"]) and all(math.isfinite(v) for k, v in out.items() if k.startswith("loss/"))


# ----------------------------------------------------------------------------- proposals file


def test_proposals_inside_the_overlap_are_drawn_from_the_file(tmp_path):
    """A proposals file for an ImageFolder of real photographs: every image gets the whole image
    and its four quadrants as boxes; each sample's instances are boxes of its own entry lying
    inside its views' overlap, reproducibly. An image without an entry gets random boxes."""
    import json

    from mugs.data.datasets import sample_key
    from mugs.methods.univip.proposals import inside
    from tests.helpers import mixed_size_imagefolder

    mixed_size_imagefolder(tmp_path / "folder", per_class=4, classes=2)
    base = load_split(build_config("univip_demo", None, ["data.dataset=imagefolder",
                                                         f"data.root={tmp_path / 'folder'}"]).data, "train")
    table = {}
    for i in range(len(base) - 1):  # the last image has no entry
        w, h = base[i][0].size
        table[sample_key(base, i)] = [[0, 0, h, w]] + [
            [t, left, h / 2, w / 2] for t in (0, h / 2) for left in (0, w / 2)
        ]
    path = tmp_path / "proposals.json"
    path.write_text(json.dumps(table))
    cfg = build_config("univip_demo", None, ["data.dataset=imagefolder", f"data.root={tmp_path / 'folder'}",
                                             f"method.proposals={path}", "data.global_crops_scale=[0.6, 1.0]"])
    _, _, extras = _views(cfg, n=8)
    again = _views(cfg, n=8)[2]
    assert torch.equal(extras["instances"], again["instances"])
    from_file = 0
    for i in range(8):
        region = overlap(extras["geometry"][i, 0, :4].tolist(), extras["geometry"][i, 1, :4].tolist())
        assert region is not None and bool(extras["instances_valid"][i])
        boxes = extras["instances"][i].tolist()
        own = table.get(sample_key(base, i), [])
        mine = [b for b in boxes if any(torch.allclose(torch.tensor(b), torch.tensor(o, dtype=torch.float32)) for o in own)]
        assert all(inside(b, [v - 1e-3 if j < 2 else v + 2e-3 for j, v in enumerate(region)]) for b in boxes)
        from_file += len(mine) == len(boxes)
        if i == len(base) - 1:
            assert not mine, "an image without proposals gets random boxes"
    assert from_file >= 1, "some samples took their boxes from the file"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "top level must map"),
        ('{"a/1.jpg": [[0, 0, 0, 4]]}', "height, width > 0"),
        ('{"a/1.jpg": [[0, 0, 4]]}', r"\[top, left, height, width\]"),
        ('{"a/1.jpg": 3}', "expected a list of boxes"),
        ("{not json", "not a JSON file"),
    ],
)
def test_bad_proposals_files_are_refused_by_entry(tmp_path, content, message):
    from mugs.methods.univip.proposals import load_proposals

    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_proposals(path)


def test_a_missing_proposals_file_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="method.proposals: .*not found"):
        build_config("univip_demo", None, [f"method.proposals={tmp_path / 'none.json'}"])
