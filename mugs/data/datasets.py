"""Real image datasets: scikit-learn's digits, CIFAR-10 (JPEG tarballs or folders), any ImageFolder.

Every dataset yields (PIL image, label). CIFAR-10 tarballs are extracted once into a cache
directory (``$MUGS_DATA_CACHE`` or ``~/.cache/mugs``) and decoded into one uint8 array, written
atomically, so later runs load in a second.
"""

from __future__ import annotations

import hashlib
import os
import random
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mugs.checkpoint import atomic_path
from mugs.data.availability import check_data_available, cifar_root

if TYPE_CHECKING:  # annotations only: the config module imports this one
    from mugs.config import DataConfig

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cache_dir() -> Path:
    return Path(os.environ.get("MUGS_DATA_CACHE", Path.home() / ".cache" / "mugs"))


class ArrayImageDataset(Dataset):
    """uint8 images [N, H, W, C] (or [N, H, W]) with integer labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None) -> None:
        self.images, self.labels, self.transform = images, labels.astype(np.int64), transform
        self.num_classes = int(labels.max()) + 1

    def __len__(self) -> int:
        return len(self.images)

    def image(self, idx: int) -> Image.Image:
        a = self.images[idx]
        img = Image.fromarray(a, mode="L" if a.ndim == 2 else "RGB")
        return img.convert("RGB")

    def __getitem__(self, idx: int) -> tuple[Any, int]:
        img = self.image(idx)
        return (self.transform(img) if self.transform else img), int(self.labels[idx])


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images [1797, 8, 8] (0..16) and targets, read from the data file
    scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``, what ``load_digits`` reads)
    without importing scikit-learn, which costs every trial ~1 s; ``load_digits`` if the file
    is not where it was."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            data = np.loadtxt(path, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def _digits(split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (1,797 real 8x8 scans, 16 grey levels), upsampled; fixed stratified 80/20 split."""
    images, target = digits_arrays()
    imgs = (images / 16.0 * 255.0).round().astype(np.uint8)
    rng = np.random.RandomState(0)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(target == c)
        test_idx.extend(rng.choice(idx, size=len(idx) // 5, replace=False))
    is_test = np.zeros(len(imgs), dtype=bool)
    is_test[test_idx] = True
    sel = is_test if split == "test" else ~is_test
    up = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BICUBIC)) for a in imgs[sel]])
    return up, target[sel]


def _decode_folder(folder: Path, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    imgs, labels = [], []
    for c, name in enumerate(classes):
        files = sorted((folder / name).iterdir())
        for f in files:
            with Image.open(f) as im:
                imgs.append(np.asarray(im.convert("RGB")))
            labels.append(c)
    return np.stack(imgs), np.asarray(labels, dtype=np.int64)


def _cifar10(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    folder = root / split
    tarball = root / f"{split}.tar.gz"
    src = folder if folder.is_dir() else tarball
    key = hashlib.sha1(f"{src.resolve()}:{src.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    cached = cache_dir() / "cifar10" / f"{split}-{key}.npz"
    if cached.exists():
        with np.load(cached) as z:
            return z["images"], z["labels"]
    if folder.is_dir():
        images, labels = _decode_folder(folder, CIFAR10_CLASSES)
    else:
        cache_dir().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            with tarfile.open(tarball) as tf:
                tf.extractall(tmp, filter="data")
            images, labels = _decode_folder(Path(tmp) / split, CIFAR10_CLASSES)
    with atomic_path(cached, suffix=".npz") as tmp:  # np.savez keeps a .npz name as given
        np.savez(tmp, images=images, labels=labels)
    return images, labels


def load_split(cfg: DataConfig, split: str, transform: Callable | None = None) -> Dataset:
    """The ``train`` or ``test`` split of the configured dataset."""
    check_data_available(cfg)
    if cfg.dataset == "digits":
        imgs, labels = _digits(split, cfg.image_size)
        ds: Dataset = ArrayImageDataset(imgs, labels, transform)
    elif cfg.dataset == "cifar10":
        imgs, labels = _cifar10(cifar_root(cfg), split)
        ds = ArrayImageDataset(imgs, labels, transform)
    else:
        from torchvision.datasets import ImageFolder

        root = Path(cfg.root).expanduser()  # type: ignore[arg-type]
        sub = "train" if split == "train" else ("val" if (root / "val").is_dir() else "test")
        ds = ImageFolder(str(root / sub), transform=transform)
        ds.num_classes = len(ds.classes)  # type: ignore[attr-defined]
    if cfg.subset is not None and split == "train":
        n = min(cfg.subset, len(ds))  # type: ignore[arg-type]
        ds = _Subset(ds, n)
    return ds


SUBSET_SEED = 0  # data.subset draws the same images whatever the run's seed


class _Subset(Dataset):
    """``n`` images drawn without replacement by a fixed-seed permutation, kept in index order.
    Not the first ``n``: CIFAR-10 and ImageFolder datasets are stored class by class, so the
    first 512 images were all airplanes and a k-NN on them sat at exactly 10 %."""

    def __init__(self, ds: Dataset, n: int) -> None:
        g = torch.Generator().manual_seed(SUBSET_SEED)
        self.ds, self.n = ds, n
        self.indices = torch.randperm(len(ds), generator=g)[:n].sort().values.tolist()  # type: ignore[arg-type]
        self.num_classes = getattr(ds, "num_classes", None)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int) -> Any:
        return self.ds[self.indices[idx]]


def sample_key(ds: Dataset, idx: int) -> str:
    """A name for image ``idx`` of ``ds`` that does not depend on ``data.subset`` or the order of
    loading: an ImageFolder image's path relative to its split folder (``class/file.jpg``), an
    in-memory split's index (``"17"``)."""
    if isinstance(ds, _Subset):
        return sample_key(ds.ds, ds.indices[idx])
    samples = getattr(ds, "samples", None)
    root = getattr(ds, "root", None)
    if samples is not None and root is not None:
        return Path(samples[idx][0]).relative_to(root).as_posix()
    return str(idx)


class SeededAugmentDataset(Dataset):
    """Applies a random transform with RNG seeded from (seed, epoch, index).

    Augmentations then do not depend on worker count or process order, and a run resumed in
    the middle of an epoch sees exactly the crops an uninterrupted run would. The global RNG
    states are restored after each sample. A transform with ``takes_rng`` gets its own
    ``random.Random`` instead, and the global states are left alone (80 us a sample cheaper);
    one with ``takes_key`` also gets the image's :func:`sample_key`.
    """

    def __init__(self, base: Dataset, transform: Callable, seed: int) -> None:
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, idx: int) -> tuple[list[torch.Tensor], bool]:
        img, _ = self.base[idx]
        s = (self.seed * 1_000_003 + self.epoch * 100_003 + idx) % (2**31)
        if getattr(self.transform, "takes_key", False):  # e.g. per-image proposals from a file
            return self.transform(img, random.Random(s), key=sample_key(self.base, idx))
        if getattr(self.transform, "takes_rng", False):
            return self.transform(img, random.Random(s))
        gen = torch.default_generator  # CPU: transforms draw from it (torch.manual_seed would also
        # queue a lazy CUDA seeding, which records a stack trace per call: ~0.3 ms a sample)
        py_state, np_state, torch_state = random.getstate(), np.random.get_state(), gen.get_state()
        try:
            random.seed(s)
            np.random.seed(s)
            gen.manual_seed(s)
            out = self.transform(img)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
            gen.set_state(torch_state)
        return out
