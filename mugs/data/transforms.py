"""Mugs multi-crop augmentation (official recipe, sizes scaled with the data).

Per image: 2 teacher global crops (weak: RandomResizedCrop, flip, colour jitter 0.4/0.4/0.2/0.1
p 0.8, grayscale 0.2; crop 1 blur p 1.0, crop 2 blur p 0.1 + solarize p ``solarize_prob``, official 0.2); 2 student global
crops drawn anew, both strong with probability ``strong_prob`` else both weak (strong = flip +
RandAugment + RandomResizedCrop + RandomErasing 0.25); local crops each strong with probability
``strong_prob``. Returns (crops, weak_flag). Blur radii (0.1-2.0 px at 224 px) scale with the
crop size.
"""

from __future__ import annotations

import random

import torch
from PIL import Image, ImageFilter, ImageOps
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing
from torchvision import transforms as T

from mugs.config import DataConfig

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class GaussianBlur:
    def __init__(self, p: float, radius_min: float, radius_max: float) -> None:
        self.p, self.rmin, self.rmax = p, radius_min, radius_max

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() > self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.rmin, self.rmax)))


class Solarize:
    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return ImageOps.solarize(img) if random.random() < self.p else img


def _normalize() -> T.Compose:
    return T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])


def _weak(
    size: int, scale: tuple[float, float], blur_p: float, solarize_p: float, ref: int, flip_p: float = 0.5
) -> T.Compose:
    r = size / 224.0 if ref == 224 else size / ref
    ops: list = [
        T.RandomResizedCrop(size, scale=scale, interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(flip_p),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(0.2),
        GaussianBlur(blur_p, 0.1 * r, 2.0 * r),
    ]
    if solarize_p > 0:
        ops.append(Solarize(solarize_p))
    ops.append(_normalize())
    return T.Compose(ops)


def _safe_posterize(img: Image.Image, bits: int, **_: object) -> Image.Image:
    """timm's increasing posterize reaches 0 bits at magnitude 10, which Pillow >= 11 rejects;
    keep at least one bit (the image is then at its most posterized)."""
    return img if bits >= 8 else ImageOps.posterize(img, max(int(bits), 1))


def rand_augment(config: str, size: int, strong_ratio: float) -> object:
    hparams = {"translate_const": int(size * strong_ratio), "img_mean": tuple(round(255 * x) for x in MEAN)}
    ra = rand_augment_transform(config, hparams)
    for op in ra.ops:
        if "Posterize" in op.name:
            op.aug_fn = _safe_posterize
    return ra


def _strong(size: int, scale: tuple[float, float], cfg: DataConfig) -> T.Compose:
    return T.Compose(
        [
            T.RandomHorizontalFlip(cfg.flip_prob),
            rand_augment(cfg.rand_augment, size, cfg.strong_ratio),
            T.RandomResizedCrop(size, scale=scale, interpolation=T.InterpolationMode.BICUBIC),
            _normalize(),
            RandomErasing(cfg.re_prob, mode="pixel", max_count=1, device="cpu"),
        ]
    )


class MultiCropAugmentation:
    """``student_views=False``: only the two teacher-style globals (and the locals), for methods
    whose networks both see the same two views."""

    def __init__(self, cfg: DataConfig, student_views: bool = True) -> None:
        self.student_views = student_views
        g, lc = cfg.image_size, cfg.local_crop_size
        gs, ls = tuple(cfg.global_crops_scale), tuple(cfg.local_crops_scale)
        self.strong_prob = cfg.strong_prob
        self.n_local = cfg.local_crops_number
        self.global1 = _weak(g, gs, 1.0, 0.0, 224, cfg.flip_prob)
        self.global2 = _weak(g, gs, 0.1, cfg.solarize_prob, 224, cfg.flip_prob)
        self.global_strong = _strong(g, gs, cfg)
        self.local_weak = _weak(lc, ls, 0.5, 0.0, 224, cfg.flip_prob)
        self.local_strong = _strong(lc, ls, cfg)

    def __call__(self, img: Image.Image) -> tuple[list[torch.Tensor], bool]:
        crops = [self.global1(img), self.global2(img)]
        weak = not (random.random() < self.strong_prob)
        if self.student_views and weak:
            crops += [self.global1(img), self.global2(img)]
        elif self.student_views:
            crops += [self.global_strong(img), self.global_strong(img)]
        for _ in range(self.n_local):
            crops.append(
                self.local_strong(img) if random.random() < self.strong_prob else self.local_weak(img)
            )
        return crops, weak


def eval_transform(image_size: int) -> T.Compose:
    """Deterministic evaluation view: resize (shorter side, 256/224 ratio) + centre crop."""
    resize = int(round(image_size * 256 / 224)) if image_size >= 224 else image_size
    return T.Compose(
        [
            T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(image_size),
            _normalize(),
        ]
    )
