"""One command for the first GPU this project gets: does every GPU path run, how fast, and does
a short CIFAR-10 run learn? Under 8 minutes on one GPU; one JSON with the device's name.

1. ``step``: one ViT-S/16 Mugs training step (the ``vit_s16_100ep`` recipe: 2 + 2 global 224-px
   and 10 local 96-px crops, queues and memories of 65,536) at a fixed batch, three ways:
   fp32 eager, the default GPU path (bf16 autocast, fused AdamW, timm's SDPA attention) and the
   same with ``torch.compile``; images/s, peak memory, FLOPs per step
   (``torch.utils.flop_counter``) and MFU against the device's dense bf16 peak (table below,
   or ``--peak-flops``). Measured by ``benchmarks/train_throughput.py`` (its method, its JSON
   section copied in).
2. ``cifar10``: the ``cifar10`` preset trained ``--cifar-epochs`` epochs on the real CIFAR-10
   (``--cifar-root``, the two tarballs), then k-NN (k=20) of its teacher, beside k-NN of the
   same network untrained (0 steps).
3. ``ddp``: ``torchrun --standalone --nproc_per_node 1``: a process group of one on NCCL (an
   all-reduce checked), and ``python -m mugs.train`` under it (DDP-wrapped student).

Goals (issue: cluster scale and speed): default GPU path >= 1.5x fp32 eager on the same card,
MFU >= 40 %. The JSON records whether each was met; nothing here is tuned towards them.

    python benchmarks/gpu_check.py --cifar-root DIR            # on a GPU machine
    python benchmarks/gpu_check.py --smoke --device cpu        # the plumbing on CPU (4 min, 2 cores)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, FLOP/s.
PEAK_BF16 = {
    "H200": 989e12,  # H200 SXM (same compute as H100 SXM)
    "H100 SXM": 989e12,
    "H100 80GB HBM3": 989e12,  # the SXM part's device name
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "A100": 312e12,
    "L40S": 362e12,
    "B200": 2250e12,
}
GOALS = {"default_over_fp32_eager": 1.5, "mfu": 0.40}


def peak_flops(name: str) -> float | None:
    """The table's peak for a device name (longest matching key), else None."""
    hits = [k for k in PEAK_BF16 if k.lower() in name.lower()]
    return PEAK_BF16[max(hits, key=len)] if hits else None


def _run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = 124, f"timed out after {timeout:.0f} s\n{(e.stdout or '')}"
    return {"rc": rc, "wall_s": round(time.perf_counter() - t0, 1), "tail": out[-3000:] if rc else out[-600:]}


def _env(device: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def step_benchmark(args: argparse.Namespace, tmp: Path, peak: float | None) -> dict[str, Any]:
    out = tmp / "step.json"
    cmd = [
        sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "--which", "vit_s16",
        "--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--batch-vits", str(args.batch), "--out", str(out),
    ]
    if peak:
        cmd += ["--peak-flops", str(peak)]
    if args.smoke:
        cmd += ["--no-compile"]
    run = _run(cmd, timeout=args.step_timeout, env=_env(args.device))
    if run["rc"] or not out.is_file():
        return {"status": "failed", **run}
    res = json.loads(out.read_text())["results"]["vit_s16"]
    v = res["variants"]
    summary = {
        name: {k: r.get(k) for k in ("status", "images_per_s", "median_step_s", "peak_memory_mib", "mfu", "error")}
        for name, r in v.items()
    }
    return {"status": "ok", "wall_s": run["wall_s"], "variants": summary, "ratios": res["ratios"],
            "flops_per_step": res.get("flops_per_step"), "config": res["config"], "detail": res}


def _train(preset: str, out: Path, sets: list[str], args: argparse.Namespace, torchrun: bool = False) -> dict:
    mod = ["-m", "mugs.train", "--preset", preset, "--out", str(out)]
    for s in sets:
        mod += ["--set", s]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", *mod]
    else:
        cmd = [sys.executable, *mod]
    return _run(cmd, timeout=args.cifar_timeout, env=_env(args.device))


def _knn(checkpoint: Path, args: argparse.Namespace) -> float | None:
    run = _run([sys.executable, "-m", "mugs.eval", "--checkpoint", str(checkpoint), "--protocol", "knn"],
               timeout=args.cifar_timeout, env=_env(args.device))
    if run["rc"]:
        return None
    last = run["tail"].strip().splitlines()[-1]
    return json.loads(last).get("knn_top1")


def _losses(metrics: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in metrics.read_text().splitlines()] if metrics.is_file() else []


def cifar_run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    sets = [f"data.root={args.cifar_root}", f"train.epochs={args.cifar_epochs}", "train.warmup_epochs=1",
            "train.log_every=20"]
    if args.smoke:
        sets += ["data.subset=512", "train.batch_size=32", "train.max_steps=10", "eval.knn_k=[5]"]
    trained = _train("cifar10", tmp / "cifar", sets, args)
    if trained["rc"]:
        return {"status": "failed", **trained}
    untrained = _train("cifar10", tmp / "untrained", [*sets, "train.max_steps=1", "train.lr=0.0"], args)
    losses = _losses(tmp / "cifar" / "metrics.jsonl")
    return {
        "status": "ok",
        "wall_s": trained["wall_s"],
        "settings": sets,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "knn_top1": _knn(tmp / "cifar" / "checkpoint.pth", args),
        "knn_top1_untrained": _knn(tmp / "untrained" / "checkpoint.pth", args) if not untrained["rc"] else None,
        "untrained_note": "1 step at lr 0 (weights as initialised; the EMA teacher equals them)",
    }


_PG_CHECK = (
    "import torch, torch.distributed as dist; from mugs.distributed import init_distributed; "
    "c = init_distributed(); dev = 'cuda' if torch.cuda.is_available() else 'cpu'; "
    "t = torch.ones(4, device=dev) * 3; dist.all_reduce(t); "
    "print('PG', dist.get_backend(), c.world_size, t.sum().item(), torch.cuda.nccl.version() "
    "if torch.cuda.is_available() else None)"
)


def ddp_check(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    pg = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "--no-python", sys.executable, "-c", _PG_CHECK],
              timeout=300, env=_env(args.device))
    m = re.search(r"PG (\w+) (\d+) ([\d.]+) (.*)", pg["tail"])
    sets = [f"data.root={args.cifar_root}", "train.max_steps=30", "train.log_every=10"]
    if args.smoke:
        sets += ["data.subset=512", "train.batch_size=32"]
    run = _train("cifar10", tmp / "ddp", sets, args, torchrun=True)
    state = None
    if (tmp / "ddp" / "checkpoint.pth").is_file():
        state = torch.load(tmp / "ddp" / "checkpoint.pth", map_location="cpu", weights_only=True)
    return {
        "status": "ok" if (m and not run["rc"]) else "failed",
        "backend": m[1] if m else None,
        "all_reduce_ok": bool(m and float(m[3]) == 12.0),
        "nccl_version": m[4] if m else None,
        "train_rc": run["rc"],
        "train_steps": state["step"] if state else None,
        "train_tail": run["tail"][-1500:] if run["rc"] else None,
        "pg_tail": None if m else pg["tail"],
    }


def _device(args: argparse.Namespace) -> dict[str, Any]:
    if args.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        return {"name": p.name, "type": "cuda", "capability": f"{p.major}.{p.minor}",
                "memory_gib": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    import platform

    return {"name": platform.processor() or platform.machine(), "type": "cpu", "cores": os.cpu_count()}


def _goals(step: dict[str, Any]) -> dict[str, Any]:
    if step.get("status") != "ok":
        return {}
    r, v = step["ratios"], step["variants"]
    ratio = r.get("compiled_bf16_over_eager_fp32") or r.get("eager_bf16_over_eager_fp32")
    mfus = [x["mfu"] for x in v.values() if x.get("mfu") is not None]
    return {
        "default_over_fp32_eager": ratio,
        "default_over_fp32_eager_met": None if ratio is None else ratio >= GOALS["default_over_fp32_eager"],
        "best_mfu": max(mfus) if mfus else None,
        "mfu_met": (max(mfus) >= GOALS["mfu"]) if mfus else None,
        "goals": GOALS,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--batch", type=int, default=64, help="ViT-S/16 step: images per step (the recipe's per-GPU 64)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps (compilation) per variant")
    ap.add_argument("--peak-flops", type=float, default=None, help="MFU denominator (default: the table)")
    ap.add_argument("--cifar-root", default=str(REPO.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--cifar-epochs", type=int, default=4)
    ap.add_argument("--step-timeout", type=float, default=300)
    ap.add_argument("--cifar-timeout", type=float, default=240)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, no compile: check the plumbing")
    ap.add_argument("--skip", default="", help="comma list of step,cifar10,ddp to leave out")
    ap.add_argument("--out", default=None, help="JSON (default benchmarks/results/gpu_check_<device>.json)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("no CUDA device here (use --device cpu --smoke to check the plumbing)")
    if args.smoke:
        args.batch, args.steps, args.warmup = min(args.batch, 2), min(args.steps, 2), min(args.warmup, 1)
    device = _device(args)
    peak = args.peak_flops or (peak_flops(device["name"]) if args.device == "cuda" else None)
    skip = {s for s in args.skip.split(",") if s}
    report: dict[str, Any] = {
        "benchmark": "gpu_check", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device, "torch": torch.__version__, "peak_flops": peak, "smoke": args.smoke,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mugs-gpu-check-") as tmp:
        for part, fn in (("step", lambda: step_benchmark(args, Path(tmp), peak)),
                         ("cifar10", lambda: cifar_run(args, Path(tmp))),
                         ("ddp", lambda: ddp_check(args, Path(tmp)))):
            if part in skip:
                continue
            print(f"[gpu_check] {part} ...", file=sys.stderr, flush=True)
            report[part] = fn()
            print(f"[gpu_check] {part}: {report[part].get('status')}", file=sys.stderr, flush=True)
    report["goals"] = _goals(report.get("step", {}))
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    slug = re.sub(r"[^a-z0-9]+", "_", device["name"].lower()).strip("_") or device["type"]
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"gpu_check_{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    _print_summary(report)
    print(f"wrote {out}")
    failed = [p for p in ("step", "cifar10", "ddp") if report.get(p, {}).get("status") == "failed"]
    return 1 if failed else 0


def _print_summary(r: dict[str, Any]) -> None:
    print(f"\n{r['device']['name']} torch {r['torch']}  ({r['wall_s']} s)")
    for name, v in r.get("step", {}).get("variants", {}).items():
        print(f"  step {name:14s} {v.get('images_per_s') or 0:9.1f} img/s  peak {v.get('peak_memory_mib') or 0:8.0f} MiB"
              f"  MFU {v['mfu'] if v.get('mfu') is not None else '-'}")
    c = r.get("cifar10", {})
    if c:
        print(f"  cifar10 {c.get('status')}: loss {c.get('loss_first')} -> {c.get('loss_last')}, "
              f"kNN {c.get('knn_top1')} (untrained {c.get('knn_top1_untrained')})")
    d = r.get("ddp", {})
    if d:
        print(f"  ddp {d.get('status')}: backend {d.get('backend')}, all-reduce ok {d.get('all_reduce_ok')}, "
              f"steps {d.get('train_steps')}")
    if r.get("goals"):
        print(f"  goals: {r['goals']}")


if __name__ == "__main__":
    raise SystemExit(main())
