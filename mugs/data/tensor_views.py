"""Weak multi-crop views drawn per sample and rendered per batch on tensors (``data.augment_backend``
``tensor``).

The PIL pipeline (``mugs.data.transforms``, the official one) costs about 0.5 ms of Python and
PIL object overhead per crop whatever the crop's size: on 16-px digits that is more than the
network's own step. Here each sample only draws its parameters (with the RNG that
``SeededAugmentDataset`` seeds per sample, so crops stay independent of batching, workers and
resume), and the batch is rendered in a few vectorised tensor operations:

- RandomResizedCrop (torchvision's sampling of box and aspect ratio) and the horizontal flip as
  one affine ``grid_sample`` per crop, bicubic, border padding, values clamped to [0, 1]. PIL
  antialiases when it shrinks; ``grid_sample`` does not (the same as torchvision on tensors).
  Images of one size (digits, CIFAR-10) are cropped as one batch; images of different sizes (an
  ImageFolder such as ImageNet) one by one, then the rest of the rendering runs on the batch.
- Colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1, probability 0.8, the four
  in a random order per sample, as torchvision's ``ColorJitter``), grayscale 0.2, Gaussian blur
  (sigma = PIL's radius, drawn from the same range) and solarisation (threshold 0.5) with the
  per-crop probabilities of the weak views in ``mugs.data.transforms``.

Only weak views exist here: ``data.strong_prob`` must be 0 (RandAugment and random erasing stay
on the PIL path).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mugs.config import DataConfig
from mugs.data.transforms import MEAN, STD

# Columns of one crop's parameter row.
_I, _J, _H, _W, _FLIP, _JITTER, _BRIGHT, _CONTRAST, _SAT, _HUE = range(10)
_ORDER = slice(10, 14)
_GRAY, _SIGMA, _SOLAR = 14, 15, 16
N_PARAMS = 17
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale


@dataclass(frozen=True)
class ViewExtras:
    """What a method needs from the views beyond the crops: ``geometry`` adds each view's box and
    flip to the batch (``extras["geometry"]``: [B, n_views, 5] rows of top, left, height, width in
    source pixels and flip, :mod:`mugs.methods.pwself.matching`); ``patch_jitter`` (a
    :class:`mugs.data.patch_jitter.PatchJitter`, PW-Self) jitters every ``patch_size``-px patch of
    every view on its own, in place of the image-level colour jitter and grayscale; ``instances``
    K > 0 (UniVIP) redraws the second view until it overlaps the first and adds K boxes inside the
    overlap (``extras["instances"]`` [B, K, 4] in source pixels, ``extras["instances_valid"]``
    [B], :mod:`mugs.methods.univip.instances`), each box ``instance_scale`` of the overlap's area,
    or taken from ``proposals`` (:mod:`mugs.methods.univip.proposals`)."""

    geometry: bool = False
    patch_size: int = 16
    patch_jitter: Any = None
    instances: int = 0
    instance_scale: tuple[float, float] = (0.1, 0.5)
    proposals: Any = None  # {sample key: [[top, left, h, w], ...]}: instances from a file


@dataclass(frozen=True)
class CropSpec:
    """One weak view: output size, crop scale range, blur and solarisation probabilities."""

    size: int
    scale: tuple[float, float]
    blur_p: float
    solarize_p: float
    flip_p: float

    @property
    def sigma_range(self) -> tuple[float, float]:
        r = self.size / 224.0  # the official radii 0.1-2.0 px are for 224-px crops
        return 0.1 * r, 2.0 * r


def crop_specs(cfg: DataConfig, student_views: bool = True) -> list[CropSpec]:
    """The views of one sample in the order the trainer expects: 2 teacher globals, 2 student
    globals (weak; only with ``student_views``), then the local crops."""
    g, gs = cfg.image_size, (cfg.global_crops_scale[0], cfg.global_crops_scale[1])
    ls = (cfg.local_crops_scale[0], cfg.local_crops_scale[1])
    first = CropSpec(g, gs, 1.0, 0.0, cfg.flip_prob)
    second = CropSpec(g, gs, 0.1, cfg.solarize_prob, cfg.flip_prob)
    local = CropSpec(cfg.local_crop_size, ls, 0.5, 0.0, cfg.flip_prob)
    globals_ = [first, second, first, second] if student_views else [first, second]
    return globals_ + [local] * cfg.local_crops_number


def resized_crop_box(
    rng: random.Random, height: int, width: int, scale: tuple[float, float]
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` (ratio 3/4-4/3), drawn from ``rng``."""
    area = height * width
    log_lo, log_hi = math.log(3 / 4), math.log(4 / 3)
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    ratio = width / height  # fallback: the central crop, aspect clamped into the range
    if ratio < 3 / 4:
        w, h = width, int(round(width / (3 / 4)))
    elif ratio > 4 / 3:
        h, w = height, int(round(height * (4 / 3)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def draw_params(rng: random.Random, spec: CropSpec, height: int, width: int) -> list[float]:
    """One crop's parameter row (see the column constants), drawn from ``rng``."""
    row = [0.0] * N_PARAMS
    row[_I], row[_J], row[_H], row[_W] = resized_crop_box(rng, height, width, spec.scale)
    row[_FLIP] = float(rng.random() < spec.flip_p)
    row[_JITTER] = float(rng.random() < 0.8)
    row[_BRIGHT] = rng.uniform(0.6, 1.4)
    row[_CONTRAST] = rng.uniform(0.6, 1.4)
    row[_SAT] = rng.uniform(0.8, 1.2)
    row[_HUE] = rng.uniform(-0.1, 0.1)
    order = [0, 1, 2, 3]
    rng.shuffle(order)
    row[_ORDER] = [float(o) for o in order]
    row[_GRAY] = float(rng.random() < 0.2)
    lo, hi = spec.sigma_range
    row[_SIGMA] = rng.uniform(lo, hi) if rng.random() < spec.blur_p else 0.0
    row[_SOLAR] = float(rng.random() < spec.solarize_p)
    return row


class TensorViews:
    """Per-sample transform: the image as uint8 [3, H, W] and the parameters of every view, drawn
    from the sample's own generator (``SeededAugmentDataset`` passes it; the global RNGs are not
    touched)."""

    takes_rng = True

    def __init__(self, cfg: DataConfig, student_views: bool = True, extras: ViewExtras | None = None) -> None:
        self.specs = crop_specs(cfg, student_views)
        self.extras = extras or ViewExtras()
        self.takes_key = self.extras.proposals is not None  # SeededAugmentDataset passes the image's key

    def __call__(
        self, img: Image.Image | np.ndarray, rng: random.Random, key: str | None = None
    ) -> tuple[Any, ...]:
        """(image, parameters) or, with extras to draw, (image, parameters, {name: tensor})."""
        a = np.asarray(img)
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        h, w = a.shape[:2]
        rows = [draw_params(rng, s, h, w) for s in self.specs]
        more: dict[str, torch.Tensor] = {}
        if self.extras.instances:
            more.update(self._instances(rows, rng, h, w, key))
        if self.extras.patch_jitter is not None:
            # drawn after the views' parameters: those stay what they are without patch jitter
            more["jitter_seed"] = torch.tensor(rng.getrandbits(62), dtype=torch.int64)
        image = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
        params = torch.tensor(rows, dtype=torch.float64)
        return (image, params, more) if more else (image, params)

    def _instances(
        self, rows: list[list[float]], rng: random.Random, h: int, w: int, key: str | None
    ) -> dict[str, torch.Tensor]:
        """Redraw the second view (in place in ``rows``) until it overlaps the first, then the
        instance boxes: from the proposals when one lies inside the overlap (the second view
        redrawn for one when none does), else at random inside it; zeros and invalid if the
        views never overlap."""
        from mugs.methods.univip.instances import OVERLAP_TRIES, draw_boxes, overlap

        region = overlap(_box(rows[0]), _box(rows[1]))
        for _ in range(OVERLAP_TRIES):
            if region is not None:
                break
            rows[1] = draw_params(rng, self.specs[1], h, w)
            region = overlap(_box(rows[0]), _box(rows[1]))
        k = self.extras.instances
        if region is None:
            return {"instances": torch.zeros(k, 4), "instances_valid": torch.tensor(False)}
        mine = self.extras.proposals.get(key) if self.extras.proposals is not None else None
        boxes = self._fit_proposals(rows, rng, h, w, region, mine) if mine else None
        if boxes is None:
            boxes = draw_boxes(rng, region, k, self.extras.instance_scale)
        return {"instances": torch.tensor(boxes, dtype=torch.float32), "instances_valid": torch.tensor(True)}

    def _fit_proposals(
        self, rows: list[list[float]], rng: random.Random, h: int, w: int, region: tuple, mine: list
    ) -> list[list[float]] | None:
        """K of the image's proposals inside the overlap; the second view redrawn (up to
        OVERLAP_TRIES times, kept only when a proposal fits) while none is; None if none ever is."""
        from mugs.methods.univip.instances import OVERLAP_TRIES, overlap
        from mugs.methods.univip.proposals import pick_boxes

        k = self.extras.instances
        boxes = pick_boxes(rng, mine, region, k)
        for _ in range(OVERLAP_TRIES):
            if boxes is not None:
                break
            candidate = draw_params(rng, self.specs[1], h, w)
            other = overlap(_box(rows[0]), _box(candidate))
            boxes = pick_boxes(rng, mine, other, k) if other is not None else None
            if boxes is not None:
                rows[1] = candidate
        return boxes


def _box(row: list[float]) -> list[float]:
    return [row[_I], row[_J], row[_H], row[_W]]


class RenderViews:
    """Collate function: stacks the samples and renders every view of the batch."""

    def __init__(self, cfg: DataConfig, student_views: bool = True, extras: ViewExtras | None = None) -> None:
        self.specs = crop_specs(cfg, student_views)
        self.extras = extras or ViewExtras()

    def __call__(self, samples: list[tuple[Any, ...]]) -> tuple[Any, ...]:
        images = _as_batch([s[0] for s in samples])
        params = torch.stack([s[1] for s in samples])  # [B, n_views, N_PARAMS]
        jitter = self._patch_params(samples)
        aug, patch = self.extras.patch_jitter, self.extras.patch_size
        if jitter:
            crops = [
                render(images, params[:, k], spec.size, partial(aug.apply, size=patch, params=jitter[k]))
                for k, spec in enumerate(self.specs)
            ]
        else:
            crops = render_views(images, params, [spec.size for spec in self.specs])
        weak = torch.ones(len(samples), dtype=torch.bool)
        if not self.extras.geometry:
            return crops, weak
        extras = {"geometry": params[:, :, [_I, _J, _H, _W, _FLIP]].float()}  # the matching's columns
        if self.extras.instances:
            for key in ("instances", "instances_valid"):
                extras[key] = torch.stack([s[2][key] for s in samples])
        return crops, weak, extras

    def _patch_params(self, samples: list[tuple[Any, ...]]) -> list[torch.Tensor] | None:
        """Per view, the per-patch jitter rows [B, n_patches, N_PARAMS], from each sample's seed."""
        aug, size = self.extras.patch_jitter, self.extras.patch_size
        if aug is None:
            return None
        gens = [torch.Generator().manual_seed(int(s[2]["jitter_seed"])) for s in samples]
        counts = [(spec.size // size) ** 2 for spec in self.specs]
        return [torch.stack([aug.draw(n, g) for g in gens]) for n in counts]


def _as_batch(images: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """uint8 [3, H, W] images as one float batch in [0, 1] when they share a size (digits,
    CIFAR-10), else as a list of float [1, 3, H, W] (ImageFolder: every image its own size)."""
    if all(im.shape == images[0].shape for im in images):
        return torch.stack(images).float().div_(255.0)
    return [im.unsqueeze(0).float().div_(255.0) for im in images]


def render(
    images: torch.Tensor | list[torch.Tensor],
    p: torch.Tensor,
    size: int,
    recolor: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Views of ``images`` (float [B, 3, H, W] in [0, 1], or a list of [1, 3, H_i, W_i] of
    different sizes, cropped one by one) from parameter rows ``p`` [B, N_PARAMS], normalised with
    the ImageNet mean and std. ``recolor`` replaces the colour jitter and grayscale of the whole
    view (PW-Self: every patch on its own)."""
    x = _crop(images, p, size)
    x = recolor(x) if recolor is not None else _jitter_and_gray(x, p)
    return _blur_solarize_normalize(x, p)


def render_views(
    images: torch.Tensor | list[torch.Tensor], params: torch.Tensor, sizes: list[int]
) -> list[torch.Tensor]:
    """Every view of the batch (``params`` [B, n_views, N_PARAMS], view k ``sizes[k]`` px): the
    pixels of :func:`render` view by view, with the colour jitter and grayscale of all views of
    one size in one batch, which divides their many small tensor operations by the number of
    views (the demo's data cost). Those operations are per sample: on images of the demo's and
    CIFAR-10's sizes the pixels are bit for bit those of view-by-view rendering (a test checks
    it); on 224-px views a per-sample mean (contrast) may be summed in another order, a few 1e-6
    apart, as it already was between batches of different make-up. The blur stays per view: its
    kernel radius follows the view's largest sigma."""
    crops = [_crop(images, params[:, k], size) for k, size in enumerate(sizes)]
    out: list[torch.Tensor] = list(crops)
    for size in dict.fromkeys(sizes):
        ks = [k for k, s in enumerate(sizes) if s == size]
        colored = _jitter_and_gray(torch.cat([crops[k] for k in ks]), torch.cat([params[:, k] for k in ks]))
        for k, x in zip(ks, colored.split(params.shape[0]), strict=True):
            out[k] = _blur_solarize_normalize(x, params[:, k])
    return out


def _crop(images: torch.Tensor | list[torch.Tensor], p: torch.Tensor, size: int) -> torch.Tensor:
    if isinstance(images, list):
        return torch.cat(
            [resized_crop(im, p[i : i + 1, :4], p[i : i + 1, _FLIP] > 0, size) for i, im in enumerate(images)]
        )
    return resized_crop(images, p[:, :4], p[:, _FLIP] > 0, size)


def _jitter_and_gray(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    x = color_jitter(x, p)
    return torch.where((p[:, _GRAY] > 0).view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)


def _blur_solarize_normalize(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    x = gaussian_blur(x, p[:, _SIGMA])
    x = torch.where((p[:, _SOLAR] > 0).view(-1, 1, 1, 1) & (x >= 0.5), 1.0 - x, x)
    mean = torch.tensor(MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Crop boxes (i, j, h, w in pixels) resized to ``size`` x ``size`` (bicubic), mirrored where
    ``flip``: one affine sampling grid per image."""
    b, _, height, width = images.shape
    i, j, h, w = (boxes[:, k].to(images.dtype) for k in range(4))
    theta = torch.zeros(b, 2, 3, dtype=images.dtype)
    theta[:, 0, 0] = torch.where(flip, -w / width, w / width)
    theta[:, 0, 2] = (2 * j + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * i + h) / height - 1
    grid = F.affine_grid(theta, [b, images.shape[1], size, size], align_corners=False)
    out = F.grid_sample(images, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out.clamp_(0.0, 1.0)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, torch.zeros_like(x), f)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), f)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, grayscale(x), f)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` (fraction of a turn) in HSV, as torchvision's tensor kernel."""
    r, g, b = x.unbind(1)
    minc, maxc = torch.aminmax(x, dim=1)
    delta = maxc - minc
    s = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    d = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    h = torch.fmod(h + shift.view(-1, 1, 1) + 1.0, 1.0)
    return _hsv_to_rgb(h, s, maxc)


# Which of (v, q, p, t) the red, green and blue channels take in each sixth of the hue circle.
_HSV_PICK = torch.tensor([[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]])


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    pick = _HSV_PICK[i.to(torch.int64) % 6].permute(0, 3, 1, 2)  # [B, 3, H, W]
    return torch.stack((v, q, p, t), dim=1).gather(1, pick)


_JITTER_OPS = (
    (adjust_brightness, _BRIGHT),
    (adjust_contrast, _CONTRAST),
    (adjust_saturation, _SAT),
    (adjust_hue, _HUE),
)


def color_jitter(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The four jitter operations in each sample's own order, where the sample's jitter is on;
    each operation runs once per position on the samples that have it there."""
    on = p[:, _JITTER] > 0
    if not bool(on.any()):
        return x
    x = x.clone()
    order = p[:, _ORDER]
    for position in range(4):
        for op_id, (op, column) in enumerate(_JITTER_OPS):
            idx = torch.nonzero(on & (order[:, position] == op_id)).flatten()
            if idx.numel():
                x[idx] = op(x[idx], p[idx, column].to(x.dtype))
    return x


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels [B, 2 * radius + 1]; sigma 0 gives the identity."""
    t = torch.arange(-radius, radius + 1, dtype=sigma.dtype)
    s = sigma.clamp_min(1e-12).view(-1, 1)
    k = torch.exp(-0.5 * (t / s) ** 2)
    k = torch.where(sigma.view(-1, 1) > 0, k, (t == 0).to(k.dtype).expand_as(k))
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable per-sample Gaussian blur (reflect padding, kernel radius ceil(3 sigma_max))."""
    smax = float(sigma.max()) if sigma.numel() else 0.0
    if smax <= 0:
        return x
    b, c, h, w = x.shape
    radius = max(1, math.ceil(3 * smax))
    radius = min(radius, h - 1, w - 1)
    k = gaussian_kernels(sigma.to(x.dtype), radius).repeat_interleave(c, dim=0)  # [B*C, K]
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)
