"""Per-sweep state on disk: the parent MLflow run, the trial table, and a lock against two drivers."""

from __future__ import annotations

import csv
import fcntl
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mugs.atomic import atomic_write_text


class SweepLocked(RuntimeError):
    """Another driver is running this sweep."""


@contextmanager
def driver_lock(sweep_dir: Path) -> Iterator[None]:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / "driver.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise SweepLocked(f"{sweep_dir}: another mugs-orch sweep is driving this sweep") from e
        yield


def load_state(sweep_dir: Path) -> dict[str, Any]:
    p = sweep_dir / "state.json"
    return json.loads(p.read_text()) if p.exists() else {}


def save_state(sweep_dir: Path, state: dict[str, Any]) -> None:
    atomic_write_text(sweep_dir / "state.json", json.dumps(state, indent=1, default=str))


def trials_csv(rows: list[dict[str, Any]]) -> str:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
    return buf.getvalue()
