"""The batched tensor views (``data.augment_backend: tensor``) against hand-built cases and
torchvision's own tensor kernels, their seeding, and a resume through them."""

import random

import pytest
import torch
import torchvision.transforms.functional as TF
from torch.utils.data import DataLoader

from mugs.config import DataConfig
from mugs.data.datasets import load_split
from mugs.data.pipeline import multicrop_dataset
from mugs.data.tensor_views import (
    N_PARAMS,
    TensorViews,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    gaussian_blur,
    resized_crop,
    resized_crop_box,
)
from mugs.errors import ConfigError
from tests.helpers import demo_config, losses_with_and_without_resume


def _image(b: int = 3, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_full_box_is_the_identity_and_flip_mirrors():
    x = _image(2, 8, 8)
    box = torch.tensor([[0.0, 0.0, 8.0, 8.0]] * 2)
    same = resized_crop(x, box, torch.tensor([False, False]), 8)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    mirrored = resized_crop(x, box, torch.tensor([True, False]), 8)
    torch.testing.assert_close(mirrored[0], x[0].flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(mirrored[1], x[1], atol=1e-5, rtol=0)


def test_box_at_its_own_size_is_the_pixel_crop():
    x = _image(1, 10, 12)
    out = resized_crop(x, torch.tensor([[2.0, 3.0, 4.0, 4.0]]), torch.tensor([False]), 4)  # i, j, h, w
    torch.testing.assert_close(out, x[:, :, 2:6, 3:7], atol=1e-5, rtol=0)
    half = resized_crop(x, torch.tensor([[0.0, 0.0, 10.0, 12.0]]), torch.tensor([False]), 5)
    assert half.shape == (1, 3, 5, 5) and half.min() >= 0 and half.max() <= 1


@pytest.mark.parametrize(
    ("ours", "theirs", "factors"),
    [
        (adjust_brightness, TF.adjust_brightness, (0.6, 1.0, 1.4)),
        (adjust_contrast, TF.adjust_contrast, (0.6, 1.0, 1.4)),
        (adjust_saturation, TF.adjust_saturation, (0.8, 1.0, 1.2)),
        (adjust_hue, TF.adjust_hue, (-0.1, 0.0, 0.07)),
    ],
)
def test_colour_operations_equal_torchvision_per_sample(ours, theirs, factors):
    x = _image(3, 6, 6, seed=1)
    got = ours(x, torch.tensor(factors))
    for k, f in enumerate(factors):
        torch.testing.assert_close(got[k], theirs(x[k], f), atol=2e-5, rtol=0)


def test_jitter_applies_each_sample_its_own_order():
    x = _image(2, 6, 6, seed=2)
    p = torch.zeros(2, N_PARAMS, dtype=torch.float64)
    p[:, 5] = 1.0  # jitter on
    p[:, 6:10] = torch.tensor([1.3, 0.7, 1.1, 0.05])
    p[0, 10:14] = torch.tensor([0.0, 1.0, 2.0, 3.0])
    p[1, 10:14] = torch.tensor([3.0, 2.0, 1.0, 0.0])
    got = color_jitter(x, p)
    one = torch.tensor([1.0])
    a = adjust_hue(
        adjust_saturation(adjust_contrast(adjust_brightness(x[:1], one * 1.3), one * 0.7), one * 1.1),
        one * 0.05,
    )
    b = adjust_brightness(
        adjust_contrast(adjust_saturation(adjust_hue(x[1:], one * 0.05), one * 1.1), one * 0.7), one * 1.3
    )
    torch.testing.assert_close(got, torch.cat([a, b]), atol=1e-6, rtol=0)
    p[:, 5] = 0.0
    assert torch.equal(color_jitter(x, p), x), "jitter off leaves the view as it is"


def test_blur_equals_torchvision_and_sigma_zero_is_the_identity():
    x = _image(2, 9, 9, seed=3)
    got = gaussian_blur(x, torch.tensor([0.8, 0.0]))
    torch.testing.assert_close(got[0], TF.gaussian_blur(x[0], [7, 7], [0.8, 0.8]), atol=1e-5, rtol=0)
    torch.testing.assert_close(got[1], x[1], atol=1e-6, rtol=0)


def test_crop_box_follows_torchvision_sampling_bounds():
    rng = random.Random(0)
    areas = []
    for _ in range(500):
        i, j, h, w = resized_crop_box(rng, 16, 16, (0.5, 1.0))
        assert 0 <= i <= 16 - h and 0 <= j <= 16 - w and 0 < h <= 16 and 0 < w <= 16
        assert 3 / 4 - 0.2 <= w / h <= 4 / 3 + 0.2
        areas.append(h * w / 256)
    assert 0.45 <= min(areas) and max(areas) <= 1.0 and 0.65 < sum(areas) / len(areas) < 0.85


def test_views_depend_on_the_seed_only():
    cfg = DataConfig(
        dataset="digits",
        image_size=16,
        local_crop_size=8,
        local_crops_number=2,
        strong_prob=0.0,
        augment_backend="tensor",
    )
    base = load_split(cfg, "train")

    def batch(seed: int, batch_size: int) -> list[torch.Tensor]:
        ds, collate = multicrop_dataset(base, cfg, seed)
        crops, weak = next(iter(DataLoader(ds, batch_size=batch_size, collate_fn=collate)))
        assert weak.all() and len(crops) == 6
        assert [tuple(c.shape[1:]) for c in crops] == [(3, 16, 16)] * 4 + [(3, 8, 8)] * 2
        return crops

    a, b, c = batch(0, 8), batch(0, 4), batch(1, 8)
    for ca, cb in zip(a, b, strict=True):
        assert torch.equal(ca[:4], cb), "a sample's views do not depend on the batch it is in"
    assert not torch.equal(a[0], c[0]), "another seed draws other views"
    assert not torch.equal(a[0], a[2]), "the student's globals are drawn anew"


def test_tensor_views_leave_the_global_rngs_alone():
    cfg = DataConfig(dataset="digits", image_size=16, strong_prob=0.0, augment_backend="tensor")
    state = random.getstate(), torch.get_rng_state()
    TensorViews(cfg)(load_split(cfg, "train").image(0), random.Random(3))
    assert random.getstate() == state[0] and torch.equal(torch.get_rng_state(), state[1])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("data.augment_backend=tensor", "data.strong_prob=0.5"), "weak views only"),
        (("data.augment_backend=gpu",), "one of pil, tensor"),
    ],
)
def test_bad_backend_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        demo_config(*overrides)


def test_resume_through_tensor_views_is_bit_exact(tmp_path):
    over = (
        "data.augment_backend=tensor",
        "train.max_steps=6",
        "train.log_every=1",
        "data.subset=256",
        "train.batch_size=32",
        "train.epochs=2",
        "data.local_crops_number=2",
    )

    a, b = losses_with_and_without_resume(lambda: demo_config(*over), tmp_path, steps=6, stop_at=3)
    assert a == b


def test_images_of_different_sizes_are_cropped_one_by_one(tmp_path):
    """Cropping a list of images one by one equals cropping them as one batch; an ImageFolder of
    real photographs of different sizes goes through the tensor views with each view's geometry
    inside its own image."""
    from mugs.data.tensor_views import render
    from tests.helpers import mixed_size_imagefolder

    images = _image(4, 12, 10, seed=3)
    g = torch.Generator().manual_seed(0)
    p = torch.zeros(4, N_PARAMS, dtype=torch.float64)
    p[:, :4] = torch.tensor([[1, 2, 8, 6], [0, 0, 12, 10], [3, 1, 5, 9], [2, 4, 7, 4]], dtype=torch.float64)
    p[:, 4] = torch.tensor([0, 1, 1, 0])
    p[:, 15] = torch.rand(4, generator=g, dtype=torch.float64)  # blur sigma
    batched = render(images, p, 8)
    one_by_one = render(list(images.unsqueeze(1)), p, 8)
    torch.testing.assert_close(one_by_one, batched, rtol=0, atol=1e-6)

    mixed_size_imagefolder(tmp_path / "folder", per_class=4, classes=2)
    cfg = demo_config("data.dataset=imagefolder", f"data.root={tmp_path / 'folder'}").data
    base = load_split(cfg, "train")
    sizes = {base[i][0].size for i in range(len(base))}
    assert len(base) == 8 and len(sizes) >= 4, "the images differ in size"
    from mugs.data.tensor_views import ViewExtras

    ds, collate = multicrop_dataset(base, cfg, 0, student_views=False, extras=ViewExtras(geometry=True))
    crops, weak, extras = next(iter(DataLoader(ds, batch_size=8, collate_fn=collate)))
    assert [tuple(c.shape) for c in crops] == [(8, 3, 16, 16)] * 2 + [(8, 3, 8, 8)] * cfg.local_crops_number
    assert all(torch.isfinite(c).all() for c in crops)
    for i in range(8):
        width, height = base[i][0].size
        top, left, h, w = extras["geometry"][i, :, :4].unbind(-1)
        assert (
            (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
        )


@pytest.mark.parametrize(
    "overrides",
    [
        (),  # the demo: four 16-px views of digits
        (
            "data.local_crops_number=6",
            "data.local_crop_size=8",
            "data.flip_prob=0.5",
            "data.solarize_prob=0.2",
        ),
    ],
)
def test_views_rendered_together_equal_views_rendered_one_by_one(overrides):
    """The collate's colour jitter and grayscale of all views of one size in one batch give the
    same pixels, bit for bit, as rendering each view alone (the operations are per sample), on
    real digits with the parameters the pipeline draws; views of two sizes are grouped apart."""
    from mugs.data.tensor_views import render, render_views

    cfg = demo_config(*overrides).data
    base = load_split(cfg, "train")
    views = TensorViews(cfg)
    samples = [views(base[i][0], random.Random(i)) for i in range(24)]
    images = torch.stack([s[0] for s in samples]).float().div_(255.0)
    params = torch.stack([s[1] for s in samples])
    sizes = [spec.size for spec in views.specs]
    jittered = params[:, :, 5] > 0  # _JITTER
    assert jittered.any() and not jittered.all(), "some views jittered, some not"
    together = render_views(images, params, sizes)
    assert len(set(sizes)) == (2 if overrides else 1)
    for k, size in enumerate(sizes):
        assert torch.equal(together[k], render(images, params[:, k], size)), f"view {k}"
