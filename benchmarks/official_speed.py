"""Our CPU training step against the official Mugs step, side by side in one process.

    python benchmarks/official_speed.py OFFICIAL_CHECKOUT [--batch-size 16] [--local-crops 4] \
        [--steps 10] [--warmup 2] [--profile]

Both sides are built as in ``benchmarks/official_parity.py`` (the checkout is the user's, imported
at run time, never edited; our weights, queues and memories copied onto the official networks;
the same crops fed to both; fp32, CPU, a one-process gloo group, the student in DDP on both
sides), with the official ViT-Tiny/16 (``--arch vit_tiny``), 2 + 2 global 224-px crops and
``--local-crops`` 96-px crops, loss weights [1, 1, 1], queues and memories of ``--queue-size``.
Each round takes one official step and one of ours on the same batch, in alternating order, so
that load from other work hits both alike; reported: the median step time of each, the median of
the per-round ratios (official / ours: > 1 means ours is faster), and with ``--profile`` where
our step's time goes (torch.profiler, top operators by self CPU time), with the share of its
matrix products (GEMMs and fused attention, the arithmetic both steps do alike) and the bound
that share sets: official / (ours x share), the speed-up ours would have if nothing else took time.

Writes ``benchmarks/results/official_speed.json``.
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
import torch.distributed as dist

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import official_parity as par  # noqa: E402
from host import cpu_info  # noqa: E402

from mugs.engine import Trainer  # noqa: E402


def _args(argv: list[str] | None) -> tuple[argparse.Namespace, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkout", type=Path)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--local-crops", type=int, default=4)
    p.add_argument("--queue-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=10, help="timed rounds")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--profile", action="store_true", help="profile 3 of our steps (torch.profiler)")
    p.add_argument("--compile", action="store_true", help="ours with train.compile (torch.compile, inductor)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "official_speed.json")
    a = p.parse_args(argv)
    parity = par.parse_args(
        [
            str(a.checkout),
            "--arch",
            "vit_tiny",
            "--batch-size",
            str(a.batch_size),
            "--local-crops",
            str(a.local_crops),
            "--queue-size",
            str(a.queue_size),
            "--epochs",
            "100",
        ]
    )
    parity.compile = a.compile
    return a, parity


def _build(parity: argparse.Namespace, tmp: Path) -> tuple[Any, dict[str, Any], Trainer]:
    off = par.import_official(parity.checkout)
    args = par.official_args(off, parity)
    cfg = par.our_config(args, parity)
    cfg.train.compile = parity.compile
    tr = Trainer(cfg, tmp / "ours", device=torch.device("cpu"), iters_per_epoch=100)
    st = par.build_official(off, args, tr)
    st["args"] = args
    return off, st, tr


def _time(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _rounds(a: argparse.Namespace, steps: dict[str, Any], batches: list) -> dict[str, list]:
    times: dict[str, list[float]] = {"official": [], "ours": []}
    for i, batch in enumerate(batches[: a.warmup + a.steps]):
        order = ["official", "ours"] if i % 2 == 0 else ["ours", "official"]
        for side in order:
            dt_ = _time(lambda s=side, b=batch: steps[s](b))
            if i >= a.warmup:
                times[side].append(dt_)
    return times


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def _is_matmul(op: str) -> bool:
    """A GEMM or a fused attention kernel: the arithmetic both steps must do alike."""
    return op in MATMUL_OPS or "scaled_dot_product" in op


def _steps(off: Any, st: dict[str, Any], tr: Trainer) -> dict[str, Any]:
    """One training step of each side on a batch (ours on copies: the harness keeps its batches)."""
    return {
        "official": lambda b: par.official_step(off, st, b, tr.step // tr.iters_per_epoch),
        "ours": lambda b: tr.train_step([x.clone() for x in b[0]], b[1].clone()),
    }


def _profile(step: Any, batches: list) -> dict[str, Any]:
    """One side over 3 steps: top operators by self CPU time, the matrix products' share of the
    step and their seconds a step, and the FLOPs of one more step (torch.utils.flop_counter: it
    counts GEMMs and explicit attention, not the CPU flash-attention kernel)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches[:3]:
            step(b)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if _is_matmul(e.key))
    with FlopCounterMode(display=False) as flops:
        step(batches[3])
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:25]
    return {
        "top_ops": [
            {
                "op": e.key,
                "self_cpu_ms_per_step": round(e.self_cpu_time_total / 3e3, 2),
                "share": round(e.self_cpu_time_total / total, 4),
                "calls_per_step": e.count / 3,
            }
            for e in rows
        ],
        "matmul_share": matmul / total,
        "matmul_s_per_step": matmul / 3e6,
        "counted_gflop_per_step": flops.get_total_flops() / 1e9,
    }


def _print(result: dict[str, Any]) -> None:
    med = result["median_step_s"]
    print(
        f"official {med['official']:.3f} s/step, ours {med['ours']:.3f} s/step; ours faster by "
        f"{result['ours_speedup_paired_median']:.2f}x (median of paired rounds; goal 1.2x)"
    )
    prof = result["profile"]
    if not prof:
        return
    for r in prof["ours"]["top_ops"]:
        print(f"  {r['op'][:50]:50s} {r['self_cpu_ms_per_step']:8.1f} ms/step  {r['share']:6.1%}")
    for side, p in prof.items():
        print(
            f"{side}: GEMMs and attention {p['matmul_s_per_step']:.2f} s a step under the profiler "
            f"({p['matmul_share']:.1%}), {p['counted_gflop_per_step']:.0f} GFLOP counted"
        )
    print(
        f"with nothing but its GEMMs and attention, ours would be {result['ours_speedup_bound']:.2f}x "
        "the official speed at most"
    )


def main(argv: list[str] | None = None) -> int:
    a, parity = _args(argv)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    batches = [par.make_batch(gen, a.batch_size, a.local_crops) for _ in range(max(a.warmup + a.steps, 4))]
    with tempfile.TemporaryDirectory() as tmp, par.cpu_only_official():
        dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=0, world_size=1)
        try:
            off, st, tr = _build(parity, Path(tmp))
            steps = _steps(off, st, tr)
            times = _rounds(a, steps, batches)
            prof = {side: _profile(steps[side], batches) for side in steps} if a.profile else None
        finally:
            dist.destroy_process_group()
    ratios = [o / u for o, u in zip(times["official"], times["ours"], strict=True)]
    med = {k: statistics.median(v) for k, v in times.items()}
    share = prof["ours"]["matmul_share"] if prof else None
    result = {
        "benchmark": "official_speed",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "official_commit": par.checkout_commit(a.checkout),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_info(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "step_s": times,
        "median_step_s": med,
        "ours_speedup_paired_median": statistics.median(ratios),
        "ours_speedup_of_medians": med["official"] / med["ours"],
        "goal": 1.2,
        "profile": prof,
        # the speed-up ours would have if everything but its GEMMs and attention took no time
        "ours_speedup_bound": med["official"] / (med["ours"] * share) if share else None,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    _print(result)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
