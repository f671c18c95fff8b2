"""Probe one demo-scale recipe in-process: train, then k-NN of the teacher and the student.

    .venv/bin/python scripts/recipe_probe.py TAG [--preset demo] [--threads 1] [--set KEY=VALUE ...]

Prints one JSON line (teacher k-NN top-1 k=20 before/after on the test split, the student's,
the online monitor values, the mean of the first and last 10 % of logged losses per term) and
appends it to ``runs/recipe_probe.jsonl``. For quick screens while searching a recipe; the
tables one reports come from ``mugs-orch sweep`` and ``mugs-orch report``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mugs.callbacks import Callback
from mugs.config import MugsConfig, build_config
from mugs.data.datasets import load_split
from mugs.data.transforms import eval_transform
from mugs.engine import Trainer
from mugs.eval.features import extract
from mugs.eval.knn import knn_classify


class _Record(Callback):
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_step_end(self, trainer: object, metrics: dict[str, float]) -> None:
        self.rows.append(dict(metrics))


def knn_top1(backbone: torch.nn.Module, cfg: MugsConfig, k: int = 20) -> float:
    tf = eval_transform(cfg.data.image_size)
    train, test = load_split(cfg.data, "train", tf), load_split(cfg.data, "test", tf)
    was_training = backbone.training
    backbone.eval()
    xtr, ytr = extract(backbone, train, torch.device("cpu"))
    xte, yte = extract(backbone, test, torch.device("cpu"))
    backbone.train(was_training)
    return knn_classify(xtr, ytr, xte, yte, [k], cfg.eval.knn_temperature)[k]


def _first_last(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    n = max(1, len(rows) // 10)
    keys = ["loss"] + sorted(k for k in rows[0] if k.startswith("loss/"))
    return {
        k: [round(sum(r[k] for r in rows[:n]) / n, 3), round(sum(r[k] for r in rows[-n:]) / n, 3)]
        for k in keys
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tag")
    p.add_argument("--preset", default="demo")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="runs/recipe_probe")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = build_config(a.preset, None, a.overrides)
    rec, t0 = _Record(), time.perf_counter()
    tr = Trainer(cfg, Path(a.out) / a.tag, callbacks=[rec])
    before = knn_top1(tr.teacher.backbone, cfg)
    tr.fit()
    result = {
        "tag": a.tag,
        "steps": tr.step,
        "knn_untrained": round(before, 2),
        "knn_teacher": round(knn_top1(tr.teacher.backbone, cfg), 2),
        "knn_student": round(knn_top1(tr.student.backbone, cfg), 2),
        "monitor": [round(r["monitor/knn_top1"], 1) for r in rec.rows if "monitor/knn_top1" in r],
        "loss_first_last": _first_last(rec.rows),
        "seconds": round(time.perf_counter() - t0, 1),
        "overrides": a.overrides,
    }
    print(json.dumps(result), flush=True)
    with (Path(a.out).parent / "recipe_probe.jsonl").open("a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
