"""Does the multi-crop augmentation keep up with training? Loader alone, step alone, both together.

    .venv/bin/python benchmarks/data_pipeline.py [--cases demo,cifar10,imagenet_crops] \
        [--batch-size 32] [--batches 24] [--steps 8] [--set KEY=VALUE ...]

Cases (``CASES``): ``demo`` (the main job's preset: digits, weak views rendered per batch, no
workers), ``cifar10`` (the cifar10 preset: real CIFAR-10 photographs through the official PIL
multi-crop, 2 + 2 global 32-px and 6 local 16-px crops, 4 workers) and ``imagenet_crops`` (the
ViT-S/16 ImageNet recipe's augmentation, 2 + 2 global 224-px and 10 local 96-px crops with
RandAugment, erasing and solarisation, on the same photographs: loader only, since a ViT-S/16
step takes tens of seconds on 2 cores). Each at the demo's batch (32, ``--batch-size``) and the
case's own data settings, with the trainer the preset builds on this machine's cores:

- ``loader``: the training loader alone (``Trainer._loader``, what ``fit`` iterates), seconds a
  batch in the steady state; the first batch (worker start-up) is reported apart, and the
  batches the workers prefetched meanwhile are drained untimed;
- ``step``: ``Trainer.train_step`` alone on batches taken from that loader beforehand;
- ``loop``: the two as ``fit`` runs them (next batch, then its step), with the time spent waiting
  for each batch measured: ``data_wait_share`` is that wait over the loop's time.

The augmentation keeps up when the loader alone delivers batches at least as fast as the steps
consume them (``loader_over_step`` >= 1) and the loop waits for data a small share of its time.
With ``num_workers`` 0 (the demo) nothing overlaps: every batch's augmentation adds to its step,
so the wait share is the augmentation's whole cost. With workers, the loop's first
``num_workers x prefetch_factor`` batches (16 for the presets' 4 workers) were made while the
first one was: its wait share shows a loader slower than the steps only when ``--steps`` is
larger, so there ``loader_over_step`` is the verdict. Rates are images over each phase's whole
time (``--batches`` batches of the loader alone, ``--steps`` of the others; workers deliver in
bursts).

Writes ``benchmarks/results/data_pipeline.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from host import cpu_info  # noqa: E402

from mugs.config import build_config  # noqa: E402
from mugs.engine import Trainer  # noqa: E402

CIFAR10 = ["data.dataset=cifar10", "data.root=../shared/data/cifar10"]
# case -> (preset, overrides, whether to time training steps too)
CASES: dict[str, tuple[str, list[str], bool]] = {
    "demo": ("demo", [], True),
    "cifar10": ("cifar10", [], True),
    "imagenet_crops": ("vit_s16_100ep", CIFAR10, False),
}


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--batch-size", type=int, default=32, help="per-process batch (the demo's: 32)")
    p.add_argument("--batches", type=int, default=24, help="timed batches of the loader alone")
    p.add_argument("--steps", type=int, default=8, help="timed batches of the step alone and of the loop")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for every preset (value parsed as YAML)",
    )
    p.add_argument("--out", type=Path, default=HERE / "results" / "data_pipeline.json")
    return p.parse_args(argv)


def _trainer(case: str, a: argparse.Namespace, tmp: Path) -> Trainer:
    preset, overrides, _ = CASES[case]
    cfg = build_config(preset, None, [*overrides, f"train.batch_size={a.batch_size}", *a.overrides])
    return Trainer(cfg, tmp / case, device=torch.device("cpu"))


def _loader_alone(tr: Trainer, n: int) -> dict[str, Any]:
    """Seconds a batch in the steady state: the batches the workers prefetched while the first
    was made are drained untimed (else they would time as instant)."""
    t0 = time.perf_counter()
    loader = tr._loader(0, 0)
    it = iter(loader)
    next(it)
    first = time.perf_counter() - t0
    drained = loader.num_workers * (loader.prefetch_factor or 0)
    for _ in range(drained):
        next(it)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - t)
    del it
    return {"first_batch_s": first, "drained_batches": drained, "batch_s": times}


def _steps_alone(tr: Trainer, n: int) -> list[float]:
    it = iter(tr._loader(1, 0))
    batches = [next(it) for _ in range(n + 1)]
    del it
    times = []
    for i, (crops, weak, *more) in enumerate(batches):
        extras = dict(more[0]) if more else None
        t = time.perf_counter()
        tr.train_step(crops, weak, diagnose=False, extras=extras)
        if i:  # the first step warms up (allocator, lazy imports)
            times.append(time.perf_counter() - t)
    return times


def _loop(tr: Trainer, n: int) -> dict[str, Any]:
    it = iter(tr._loader(2, 0))
    next(it)  # worker start-up is not the steady state
    waits, totals = [], []
    for _ in range(n):
        t = time.perf_counter()
        crops, weak, *more = next(it)
        got = time.perf_counter()
        tr.train_step(crops, weak, diagnose=False, extras=dict(more[0]) if more else None)
        waits.append(got - t)
        totals.append(time.perf_counter() - t)
    del it
    return {"wait_s": waits, "batch_s": totals, "data_wait_share": sum(waits) / sum(totals)}


def _rates(times: list[float], batch: int) -> dict[str, float]:
    """Images a second over the phase's whole time: workers deliver in bursts (a batch each
    as they finish, then a wait), so the median batch would overstate the loader."""
    return {"median_batch_s": statistics.median(times), "images_per_s": batch * len(times) / sum(times)}


def measure(case: str, a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The phases of one case (the loader alone where steps are not timed)."""
    tr = _trainer(case, a, tmp)
    d, b = tr.cfg.data, a.batch_size
    loader = _loader_alone(tr, a.batches)
    out = {
        "case": case,
        "preset": CASES[case][0],
        "dataset": d.dataset,
        "augment_backend": d.augment_backend,
        "num_workers": d.num_workers,
        "crops": f"2+2 global {d.image_size} px, {d.local_crops_number} local {d.local_crop_size} px",
        "batch_size": b,
        "loader": {**loader, **_rates(loader["batch_s"], b)},
    }
    if CASES[case][2]:
        step, loop = _steps_alone(tr, a.steps), _loop(tr, a.steps)
        out["step"] = {"batch_s": step, **_rates(step, b)}
        out["loop"] = {**loop, **_rates(loop["batch_s"], b)}
        out["loader_over_step"] = out["loader"]["images_per_s"] / out["step"]["images_per_s"]
    return out


def _print(r: dict[str, Any]) -> None:
    print(
        f"{r['case']} ({r['preset']}): {r['dataset']}, {r['augment_backend']} backend, {r['num_workers']} workers, "
        f"batch {r['batch_size']} ({r['crops']})"
    )
    print(
        f"  loader alone {r['loader']['images_per_s']:8.1f} img/s   (first batch "
        f"{r['loader']['first_batch_s']:.2f} s)"
    )
    if "step" not in r:
        return
    print(f"  step alone   {r['step']['images_per_s']:8.1f} img/s")
    print(
        f"  loop         {r['loop']['images_per_s']:8.1f} img/s, waiting for data "
        f"{r['loop']['data_wait_share']:.1%} of the time; loader/step {r['loader_over_step']:.1f}x"
    )


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in a.cases.split(","):
            if case not in CASES:
                raise SystemExit(f"unknown case {case!r}; one of {', '.join(CASES)}")
            results.append(measure(case, a, Path(tmp)))
            _print(results[-1])
    out = {
        "benchmark": "data_pipeline",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpu": cpu_info(), "torch": torch.__version__},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "results": results,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = a.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(out, indent=2) + "\n")
    tmp_out.replace(a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
