"""Is the configured dataset where the config says? Checked when a config is validated (the CLI,
before anything is submitted), so this module imports neither torch nor the datasets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mugs.errors import ConfigError

if TYPE_CHECKING:
    from mugs.config import DataConfig


def cifar_root(cfg: DataConfig) -> Path:
    if not cfg.root:
        raise ConfigError(
            "data.root: CIFAR-10 needs a path (a folder with train.tar.gz/test.tar.gz or train/ test/)"
        )
    return Path(cfg.root).expanduser()


def check_data_available(cfg: DataConfig) -> None:
    """Fail before training, naming the key, when the data cannot be found."""
    if cfg.dataset == "digits":
        return
    if cfg.dataset == "cifar10":
        root = cifar_root(cfg)
        for split in ("train", "test"):
            if not ((root / split).is_dir() or (root / f"{split}.tar.gz").is_file()):
                raise ConfigError(
                    f"data.root: {root} has neither {split}/ nor {split}.tar.gz (CIFAR-10 expected)"
                )
        return
    if not cfg.root:
        raise ConfigError("data.root: an ImageFolder dataset needs a path")
    root = Path(cfg.root).expanduser()
    if not (root / "train").is_dir():
        raise ConfigError(
            f"data.root: {root}/train is not a directory (ImageFolder layout root/train/<class>/*)"
        )
