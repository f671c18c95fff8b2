"""Atomic file writes (readers see the old file or the new one, never half of either), and the
checkpoint's file name. Standard library only: light processes (the local runner) import it
without torch."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHECKPOINT_NAME = "checkpoint.pth"  # in the training output directory (the trial directory)


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; after the block, fsync it and rename it over ``path``.

    The temporary file is removed if the block fails, so readers see the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove_stale_temps(folder: str | Path, name: str) -> list[Path]:
    """Remove the temporary files :func:`atomic_path` left for ``name`` in ``folder`` when a
    process was killed mid-write (a checkpoint-sized file nothing else removes). Call it only
    where no other process writes ``name`` at the same time (the trainer, at start)."""
    removed = []
    for p in Path(folder).glob(f".{name}.*.tmp"):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed
