"""``data.subset``: a fixed draw over the whole training set, not its first images.

CIFAR-10 (like any ImageFolder) is stored class by class: the first 512 training images were
all airplanes, so a smoke run on a subset learned one class and its k-NN sat at exactly 10 %."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from mugs.config import DataConfig
from mugs.data.datasets import load_split

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def _labels(ds) -> list[int]:
    return [ds[i][1] for i in range(len(ds))]


def test_cifar10_subset_spans_the_classes_and_is_fixed():
    cfg = DataConfig(dataset="cifar10", root=str(CIFAR), image_size=32, subset=512)
    ds = load_split(cfg, "train")
    counts = Counter(_labels(ds))
    assert len(ds) == 512
    assert sorted(counts) == list(range(10)), counts
    assert min(counts.values()) >= 25, f"about 51 a class expected: {counts}"
    again = load_split(cfg, "train")
    assert again.indices == ds.indices, "the same images every time (and for every run seed)"
    assert ds.indices == sorted(ds.indices) and len(set(ds.indices)) == 512


def test_digits_subset_is_a_draw_not_a_prefix():
    ds = load_split(DataConfig(dataset="digits", image_size=16, subset=128), "train")
    assert len(ds) == 128 and ds.indices != list(range(128))
    assert sorted(Counter(_labels(ds))) == list(range(10))


def test_digits_read_without_scikit_learn_equal_load_digits():
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from mugs.data.datasets import digits_arrays

    images, target = digits_arrays()
    d = load_digits()
    assert (images == d.images).all() and (target == d.target).all() and images.shape == (1797, 8, 8)
    code = "import sys; from mugs.data.datasets import digits_arrays; digits_arrays(); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", "scikit-learn stays unimported (~1 s per trial)"
