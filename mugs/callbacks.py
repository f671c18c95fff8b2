"""A small callback interface so wrappers (e.g. an experiment tracker) observe training without
``mugs`` importing them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from mugs.atomic import atomic_write_text


class Callback:
    """Override what you need. ``metrics`` holds the keys written to metrics.jsonl. In a DDP run
    only rank 0 calls them (the other ranks' callbacks are never called: two ranks rewriting one
    metrics.jsonl on start lost every line rank 0 then wrote)."""

    def on_train_start(self, trainer: Any) -> None: ...

    def on_step_end(self, trainer: Any, metrics: dict[str, float]) -> None: ...

    def on_checkpoint(self, trainer: Any, path: Path) -> None: ...

    def on_train_end(self, trainer: Any, status: str) -> None: ...


class JsonlMetrics(Callback):
    """Appends one JSON object per logged step to ``metrics.jsonl``.

    On resume, lines past the checkpoint's step (logged after the last checkpoint by a run that
    then died) are dropped so each step appears once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = None

    def on_train_start(self, trainer: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= trainer.step:
                        keep.append(line)
                except (ValueError, KeyError):
                    continue
            atomic_write_text(self.path, "".join(x + "\n" for x in keep))  # a kill here loses nothing
        self._f = self.path.open("a")

    def on_step_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        assert self._f is not None
        self._f.write(json.dumps(metrics) + "\n")
        self._f.flush()

    def on_train_end(self, trainer: Any, status: str) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class ProgressBar(Callback):
    """rich progress bar on a terminal; a plain line every ``log_every`` steps in logs."""

    def __init__(self) -> None:
        self._progress = None
        self._task = None

    def on_train_start(self, trainer: Any) -> None:
        if sys.stderr.isatty():
            try:
                from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
            except ImportError:  # rich is optional for the core
                return
            self._progress = Progress(
                TextColumn("[bold]mugs"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train", total=trainer.total_steps, completed=trainer.step, info=""
            )

    def on_step_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        info = f"loss {metrics['loss']:.4f}  {metrics['images_per_s']:.0f} img/s"
        if self._progress is not None:
            self._progress.update(self._task, completed=metrics["step"], info=info)
        else:
            print(f"step {metrics['step']}/{trainer.total_steps} epoch {metrics['epoch']} {info}", flush=True)

    def on_train_end(self, trainer: Any, status: str) -> None:
        if self._progress is not None:
            self._progress.stop()
