"""``python -m mugs.eval --checkpoint PATH --protocol knn|linear|pixels [--data ROOT]``.

Prints one JSON line and writes it beside the checkpoint (eval_knn.json / eval_linear.json /
eval_pixels.json). ``pixels`` is the raw-pixel reference (:mod:`mugs.eval.pixels`): the same
weighted kNN on the checkpoint's dataset, without the network; it reports the same keys as
``knn`` (``knn_top1``, ``knn_top1_k<k>``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from mugs import checkpoint as ckpt
from mugs.checkpoint import atomic_write_text
from mugs.config import ConfigError, MugsConfig, config_from_checkpoint
from mugs.data.datasets import load_split
from mugs.data.transforms import eval_transform
from mugs.eval import KNN, PIXELS, PROTOCOLS
from mugs.eval.features import extract, load_teacher_backbone
from mugs.eval.knn import knn_classify, knn_summary
from mugs.eval.linear import linear_probe
from mugs.eval.pixels import flat_pixels, pixel_knn


def evaluate(
    checkpoint: str | Path, protocol: str, data_root: str | None = None, num_workers: int = 0
) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    if protocol == PIXELS:
        return evaluate_pixels(checkpoint, data_root, device, t0)
    backbone, cfg, step = load_teacher_backbone(checkpoint, device)
    if data_root is not None:
        cfg.data.root = data_root
    tf = eval_transform(cfg.data.image_size)
    train, test = load_split(cfg.data, "train", tf), load_split(cfg.data, "test", tf)
    ev = cfg.eval
    kind = "knn" if protocol == KNN else "linear"
    kw = {
        "n_last_blocks": ev.n_last_blocks,
        "avgpool": ev.avgpool_patchtokens,
        "kind": kind,
        "num_workers": num_workers,
    }
    xtr, ytr = extract(backbone, train, device, **kw)
    xte, yte = extract(backbone, test, device, **kw)
    result: dict = {
        "protocol": protocol,
        "checkpoint": str(checkpoint),
        "step": step,
        "dataset": cfg.data.dataset,
    }
    if protocol == KNN:
        result.update(knn_summary(knn_classify(xtr, ytr, xte, yte, ev.knn_k, ev.knn_temperature)))
    else:
        result.update(
            linear_probe(xtr, ytr, xte, yte, ev.linear_lrs, ev.linear_epochs, ev.linear_batch_size, cfg.seed)
        )
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def evaluate_pixels(
    checkpoint: str | Path, data_root: str | None, device: torch.device, t0: float | None = None
) -> dict:
    """The raw-pixel kNN on the checkpoint's dataset (its config; the weights are not used)."""
    t0 = time.perf_counter() if t0 is None else t0
    state = ckpt.load(checkpoint)
    cfg: MugsConfig = config_from_checkpoint(state["config"])
    if data_root is not None:
        cfg.data.root = data_root
    tf = eval_transform(cfg.data.image_size)
    xtr, ytr = flat_pixels(load_split(cfg.data, "train", tf))
    xte, yte = flat_pixels(load_split(cfg.data, "test", tf))
    per_k = pixel_knn(xtr, ytr, xte, yte, cfg.eval.knn_k, cfg.eval.knn_temperature, device)
    result: dict = {
        "protocol": PIXELS,
        "checkpoint": str(checkpoint),
        "step": int(state["step"]),
        "dataset": cfg.data.dataset,
        **knn_summary(per_k),
    }
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mugs.eval", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--protocol", choices=PROTOCOLS, required=True)
    p.add_argument("--data", help="dataset root (overrides the checkpoint's data.root)")
    p.add_argument("--num-workers", type=int, default=0)
    args = p.parse_args(argv)
    ck = Path(args.checkpoint)
    if not ck.is_file():
        print(f"error: --checkpoint {ck}: not found", file=sys.stderr)
        return 2
    try:
        result = evaluate(ck, args.protocol, args.data, args.num_workers)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    line = json.dumps(result)
    atomic_write_text(ck.parent / f"eval_{args.protocol}.json", line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
