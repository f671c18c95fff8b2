"""Training-step throughput and peak memory of the Mugs trainer, eager vs ``torch.compile``.

Measures ``Trainer.train_step`` (teacher forward, student forward/backward, the three losses,
queue/memory updates, AdamW, EMA) for

* ``cifar10``: the ``cifar10`` preset (ViT-Tiny/4, 32 px, 2 teacher + 2 student global crops
  and 6 local 16-px crops), on real CIFAR-10 training images through the real multi-crop
  pipeline (``data.root``, default ``../shared/data/cifar10``);
* ``vit_s16``: the ``vit_s16_100ep`` recipe (ViT-S/16, 224 px, 2 + 2 global and 10 local
  96-px crops, queues and memories of 65,536). ImageNet is not available here, so its crops are
  random tensors of the right shapes (throughput does not depend on pixel values); the JSON
  says so.

The batches are built once, before timing; data loading and augmentation are excluded. Each
variant (eager / compiled; on CUDA bf16 autocast and also fp32 eager) runs in its own
subprocess so that its peak memory and any compilation failure are its own: warm-up steps (the
first includes compilation, cold inductor cache unless TORCHINDUCTOR_CACHE_DIR is set), then N
timed steps, on CPU interleaved round-robin across the variants' live processes so that load
from other work hits them alike; reported: median step time, images/s (distinct
images per step = the per-process batch), compiled/eager ratio, peak memory (CPU: the process's
peak resident set, VmHWM, reset after start-up where the kernel allows; CUDA:
``torch.cuda.max_memory_allocated``), FLOPs per step (``torch.utils.flop_counter``, one eager
step) and, on CUDA, MFU against ``--peak-flops`` (default 989e12: H100 SXM dense bf16).

    python benchmarks/train_throughput.py                      # both, CPU or CUDA
    python benchmarks/train_throughput.py --which cifar10 --steps 5 --warmup 2 --no-compile
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# Read before importing torch: importing torch sets TORCHINDUCTOR_CACHE_DIR to its default.
_USER_INDUCTOR_CACHE = os.environ.get("TORCHINDUCTOR_CACHE_DIR")

import torch  # noqa: E402
from host import cpu_info  # noqa: E402

WORKLOADS: dict[str, dict[str, Any]] = {
    "cifar10": {
        "preset": "cifar10",
        "cpu_batch": 32,
        "input": "real CIFAR-10 training images through the multi-crop augmentation pipeline",
    },
    "vit_s16": {
        "preset": "vit_s16_100ep",
        "cpu_batch": 8,
        "input": (
            "random tensors of the recipe's crop shapes (ImageNet is not available here; "
            "throughput does not depend on pixel values)"
        ),
    },
}
MiB = 2**20


# ----------------------------------------------------------------------------- memory helpers
def _proc_status(field: str) -> int | None:
    """A ``/proc/self/status`` field in bytes (VmHWM: peak resident set, VmRSS: current)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_cpu_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _cpu_peak_bytes() -> tuple[int | None, str]:
    peak = _proc_status("VmHWM")
    if peak is not None:
        return peak, "/proc/self/status VmHWM"
    try:  # not Linux: psutil's peak working set (Windows) if present, else getrusage
        import psutil

        info = psutil.Process().memory_info()
        if hasattr(info, "peak_wset"):
            return int(info.peak_wset), "psutil peak_wset"
    except ImportError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "getrusage ru_maxrss"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- configs, batches
def _cifar_root(arg: str | None) -> str:
    if arg:
        return str(Path(arg).expanduser().resolve())
    rel = Path("../shared/data/cifar10")  # the preset's root, relative to the repository root
    return str((rel if rel.exists() else REPO / rel).resolve())


def _overrides(which: str, batch: int, args: argparse.Namespace) -> list[str]:
    out = [f"train.batch_size={batch}", "data.num_workers=0"]
    if which == "cifar10":
        out.append(f"data.root={_cifar_root(args.cifar_root)}")
    return out


def _config(which: str, overrides: list[str]):
    from mugs.config import build_config

    return build_config(WORKLOADS[which]["preset"], None, overrides, check_data=False)


def _config_summary(cfg) -> dict[str, Any]:
    m, d, t, mo = cfg.method, cfg.data, cfg.train, cfg.model
    return {
        "preset": cfg.preset,
        "arch": mo.arch,
        "patch_size": mo.patch_size,
        "drop_path_rate": mo.drop_path_rate,
        "image_size": d.image_size,
        "global_crops": "2 teacher + 2 student",
        "local_crops_number": d.local_crops_number,
        "local_crop_size": d.local_crop_size,
        "batch_size_per_process": t.batch_size,
        "loss_weights": m.loss_weights,
        "instance_queue_size": m.instance_queue_size,
        "local_group_queue_size": m.local_group_queue_size,
        "memory_size": m.memory_size,
        "topk": m.topk,
        "group_out_dim": mo.group_out_dim,
        "head_hidden_dim": mo.head_hidden_dim,
        "predictor_hidden_dim": mo.predictor_hidden_dim,
        "iters_per_epoch": 1000,
    }


def _build_batches(which: str, cfg, n: int, seed: int) -> tuple[list[Any], float]:
    """``n`` batches (crops, weak): real data where it exists, random tensors of the right shapes else."""
    t0 = time.perf_counter()
    b, d = cfg.train.batch_size, cfg.data
    if which == "cifar10":
        from torch.utils.data import DataLoader

        from mugs.data.datasets import load_split
        from mugs.data.pipeline import multicrop_dataset

        ds, collate = multicrop_dataset(load_split(d, "train"), d, seed)
        loader = DataLoader(ds, batch_size=b, shuffle=False, drop_last=True, collate_fn=collate)
        batches = []
        for crops, weak in loader:  # consecutive, distinct images
            batches.append((crops, weak))
            if len(batches) == n:
                break
    else:
        g = torch.Generator().manual_seed(seed)
        batches = []
        for _ in range(n):
            crops = [torch.randn(b, 3, d.image_size, d.image_size, generator=g) for _ in range(4)]
            crops += [
                torch.randn(b, 3, d.local_crop_size, d.local_crop_size, generator=g)
                for _ in range(d.local_crops_number)
            ]
            weak = torch.rand(b, generator=g) < 0.5
            batches.append((crops, weak))
    return batches, time.perf_counter() - t0


# ----------------------------------------------------------------------------- one variant (child)
PREFIX = "@@bench "


def _reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(PREFIX + json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve_variant(spec: dict[str, Any]) -> None:
    """Runs in its own subprocess and obeys the driver's commands on stdin, one a line.

    ``warmup``: the untimed steps (compilation happens here); ``step``: one timed step;
    ``finish``: peak memory and (eager) the FLOP count, then exit. Replies are JSON lines on
    stdout prefixed with ``PREFIX``. Keeping the process alive between commands lets the driver
    interleave the timed steps of several variants.
    """
    from mugs.engine import Trainer

    device = torch.device(spec["device"])
    if device.type == "cpu":
        torch.set_num_threads(spec["threads"])
    batches = torch.load(spec["batches"])
    batches = [([c.to(device) for c in crops], weak.to(device)) for crops, weak in batches]
    cfg = _config(spec["which"], spec["overrides"])
    use_bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
    res: dict[str, Any] = {
        "variant": spec["name"],
        "compile": cfg.train.compile,
        "precision": "bf16 autocast" if use_bf16 else "fp32",
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        res["peak_reset_after_setup"] = _reset_cpu_peak()
        base = _proc_status("VmRSS")

    n_steps = 0

    def step() -> tuple[float, float]:
        nonlocal n_steps
        crops, weak = batches[n_steps % len(batches)]
        n_steps += 1
        _sync(device)
        t = time.perf_counter()
        out = tr.train_step(crops, weak)
        _sync(device)
        return time.perf_counter() - t, out["loss"]

    def fail(stage: str, e: BaseException) -> None:
        res.update(
            status="failed",
            stage=stage,
            error=f"{type(e).__name__}: {e}"[:2000],
            traceback=traceback.format_exc()[-4000:],
        )
        _reply(res)

    try:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as out_dir:  # train_step writes nothing there
            tr = Trainer(cfg, out_dir, device=device, iters_per_epoch=1000)
        res["build_s"] = round(time.perf_counter() - t0, 3)
    except Exception as e:
        return fail("build", e)
    _reply({"event": "ready"})

    timed: list[tuple[float, float]] = []
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "warmup":
            try:
                warm = [step() for _ in range(spec["warmup"])]
            except Exception as e:  # torch.compile failures land here: recorded, not fatal
                return fail("warm-up (includes compilation)" if cfg.train.compile else "warm-up", e)
            res["warmup_step_s"] = [round(t, 4) for t, _ in warm]
            _reply({"event": "warm"})
        elif cmd == "step":
            try:
                timed.append(step())
            except Exception as e:
                return fail("timed steps", e)
            _reply({"event": "step", "t": timed[-1][0]})
        elif cmd == "finish":
            break
    if not timed:
        res.update(status="failed", stage="timed steps", error="no timed step was run")
        return _reply(res)

    times = [t for t, _ in timed]
    med = statistics.median(times)
    res.update(
        status="ok",
        step_s=[round(t, 4) for t in times],
        median_step_s=med,
        images_per_s=cfg.train.batch_size / med,
        losses_first_last=[timed[0][1], timed[-1][1]],
    )
    if device.type == "cuda":
        res.update(
            peak_memory_mib=torch.cuda.max_memory_allocated(device) / MiB,
            baseline_memory_mib=base / MiB,
            memory_source="torch.cuda.max_memory_allocated (baseline: the pre-built input batches)",
        )
    else:
        peak, source = _cpu_peak_bytes()
        res.update(
            peak_memory_mib=peak / MiB if peak is not None else None,
            baseline_memory_mib=base / MiB if base is not None else None,
            memory_source=source
            + (
                " reset after start-up: peak resident set of the process; baseline = torch import "
                "+ input batches"
                if res["peak_reset_after_setup"]
                else " (peak RSS of the whole process; could not be reset after start-up)"
            ),
        )
    if spec["count_flops"] and not cfg.train.compile:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            tr.train_step(*batches[0])
        res["flops_per_step"] = counter.get_total_flops()
    _reply(res)


class VariantProcess:
    """Driver-side handle of one ``serve_variant`` subprocess."""

    def __init__(self, spec: dict[str, Any], work: Path, env: dict[str, str], timeout: float) -> None:
        import queue
        import threading

        self.name, self.timeout = spec["name"], timeout
        self.result: dict[str, Any] | None = None
        self.load: list[float | None] = []
        self.spec_path = work / f"{spec['which']}-{spec['name']}.spec.json"
        self.spec_path.write_text(json.dumps(spec))
        self.stderr_path = self.spec_path.with_suffix(".stderr")
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--_variant", str(self.spec_path)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self._q: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.t0 = time.perf_counter()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                self._q.put(json.loads(line[len(PREFIX) :]))
        self._q.put(None)  # EOF

    @property
    def alive(self) -> bool:
        return self.result is None

    def _fail(self, error: str) -> None:
        self._stderr.flush()
        tail = self.stderr_path.read_text(errors="replace")[-4000:]
        self.result = {"variant": self.name, "status": "failed", "error": error, "stderr_tail": tail}
        if self.proc.poll() is None:
            self.proc.kill()

    def request(self, cmd: str | None, expect: str) -> dict[str, Any] | None:
        """Send ``cmd`` (None: just wait) and wait for an ``expect`` event; a failure ends the variant."""
        import queue

        if not self.alive:
            return None
        try:
            if cmd is not None:
                assert self.proc.stdin is not None
                self.proc.stdin.write(cmd + "\n")
                self.proc.stdin.flush()
            msg = self._q.get(timeout=self.timeout)
        except queue.Empty:
            self._fail(f"no reply to {cmd or 'start-up'!r} within {self.timeout:.0f} s")
            return None
        except OSError as e:
            self._fail(f"subprocess gone: {e}")
            return None
        if msg is None:
            self._fail(f"subprocess exited with {self.proc.wait()}")
            return None
        if msg.get("status") == "failed" or (expect == "done" and "status" in msg):
            self.result = msg
            return None
        if msg.get("event") != expect:
            self._fail(f"unexpected reply {msg!r} to {cmd!r}")
            return None
        return msg

    def finish(self) -> dict[str, Any]:
        self.request("finish", "done")
        if self.result is None:
            self._fail("no result")
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._stderr.close()
        assert self.result is not None
        self.result["wall_s"] = round(time.perf_counter() - self.t0, 1)
        return self.result


# ----------------------------------------------------------------------------- driver
def _device_info(device: torch.device, threads: int) -> dict[str, Any]:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return {
            "type": "cuda",
            "name": torch.cuda.get_device_name(device),
            "memory_gib": round(p.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
        }
    return {"type": "cpu", **cpu_info(), "torch_threads": threads}


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _git_commit() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _variants(device: torch.device, args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    if device.type == "cuda":
        v = [("eager_bf16", ["train.precision=bf16"])]
        if not args.no_compile:
            v.append(("compiled_bf16", ["train.precision=bf16", "train.compile=true"]))
        if not args.no_fp32:
            v.append(("eager_fp32", ["train.precision=fp32"]))
        return v
    v = [("eager_fp32", ["train.precision=fp32"])]
    if not args.no_compile:
        v.append(("compiled_fp32", ["train.precision=fp32", "train.compile=true"]))
    return v


def _measure(
    w: str,
    specs: list[dict[str, Any]],
    work: Path,
    env: dict[str, str],
    args: argparse.Namespace,
    interleave: bool,
) -> dict[str, dict[str, Any]]:
    """Warm up and time every variant; interleaved (round-robin timed steps) or one after another."""

    def log(msg: str) -> None:
        print(f"[{w}] {msg}", file=sys.stderr, flush=True)

    def start(spec: dict[str, Any]) -> VariantProcess:
        v = VariantProcess(spec, work, env, args.timeout)
        v.load.append(_loadavg())
        log(f"{v.name}: start-up and {args.warmup} warm-up steps ...")
        if v.request(None, "ready"):
            v.request("warmup", "warm")
        return v

    def run_steps(vs: list[VariantProcess]) -> None:
        for i in range(args.steps):
            order = vs[i % len(vs) :] + vs[: i % len(vs)]  # rotate: no variant always goes first
            for v in order:
                msg = v.request("step", "step")
                if msg:
                    log(f"{v.name}: step {i + 1}/{args.steps} {msg['t']:.3f} s")

    def done(v: VariantProcess) -> dict[str, Any]:
        r = v.finish()
        r["loadavg_1min_start_end"] = [v.load[0], _loadavg()]  # other work on the machine
        if r.get("status") == "ok":
            log(
                f"{v.name}: median {r['median_step_s']:.3f} s/step, {r['images_per_s']:.2f} img/s, "
                f"peak {_fmt(r.get('peak_memory_mib'), '.0f')} MiB"
            )
        else:
            log(f"{v.name}: FAILED ({r.get('stage', '')}): {r.get('error')}")
        return r

    results: dict[str, dict[str, Any]] = {}
    if interleave:
        procs = [start(spec) for spec in specs]
        run_steps(procs)
        for v in procs:
            results[v.name] = done(v)
    else:
        for spec in specs:
            v = start(spec)
            run_steps([v])
            results[v.name] = done(v)
    return results


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--which", default="cifar10,vit_s16", help="comma-separated: cifar10, vit_s16")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    ap.add_argument("--batch-cifar", type=int, default=None, help="per-process batch (CPU 32, CUDA 256)")
    ap.add_argument("--batch-vits", type=int, default=None, help="per-process batch (CPU 8, CUDA 64)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    ap.add_argument("--no-fp32", action="store_true", help="CUDA: skip the fp32 eager variant")
    ap.add_argument("--no-flops", action="store_true", help="skip the FLOP count (one extra eager step)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=None, help="CPU: torch threads (default: cores available)")
    ap.add_argument(
        "--peak-flops", type=float, default=989e12, help="device peak for MFU (H100 SXM dense bf16)"
    )
    ap.add_argument("--cifar-root", default=None, help="CIFAR-10 folder (default ../shared/data/cifar10)")
    ap.add_argument(
        "--interleave",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep all variants' processes alive and alternate their timed steps, so that load from "
        "other work hits them alike (default: on for CPU, off for CUDA, where the processes would "
        "share GPU memory)",
    )
    ap.add_argument("--timeout", type=float, default=3600, help="seconds to wait for any one reply")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/train_throughput_<device>.json)"
    )
    ap.add_argument("--_variant", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._variant:  # child process
        serve_variant(json.loads(Path(args._variant).read_text()))
        return 0

    which = [w.strip() for w in args.which.split(",") if w.strip()]
    unknown = [w for w in which if w not in WORKLOADS]
    if unknown:
        ap.error(f"--which: unknown {unknown} (known: {', '.join(WORKLOADS)})")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = args.threads or cores
    torch.set_num_threads(threads)
    interleave = args.interleave if args.interleave is not None else device.type == "cpu"
    out_path = (
        Path(args.out)
        if args.out
        else REPO / "benchmarks" / "results" / f"train_throughput_{device.type}.json"
    )

    import timm

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    report: dict[str, Any] = {
        "benchmark": "train_throughput",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": _device_info(device, threads),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "settings": {
            "steps": args.steps,
            "warmup": args.warmup,
            "peak_flops": args.peak_flops if device.type == "cuda" else None,
            "seed": args.seed,
            "interleaved": interleave,
        },
        "method": [
            "Trainer(cfg, out, iters_per_epoch=1000).train_step(crops, weak) on pre-built batches: "
            "data loading and augmentation are excluded from the timing",
            "each variant runs in its own subprocess (its own peak memory, compilation failures "
            "contained); warm-up steps (compilation included) are untimed",
            "interleaved: all variants' processes stay alive and take timed steps in turn (order "
            "rotated each round), so that load from other work on the machine hits them alike",
            "images/s = per-process batch / median step time (distinct images, not crops)",
            "train.compile=true compiles the student and teacher backbones (heads, losses, optimiser eager)",
            "flops_per_step: torch.utils.flop_counter.FlopCounterMode over one eager step "
            "(matmul/conv/attention FLOPs, forward + backward)",
        ],
        "results": {},
    }
    with tempfile.TemporaryDirectory(prefix="mugs-bench-") as tmp:
        work = Path(tmp)
        # a cold compilation cache (compile time in the first warm-up step) unless the user set one
        env["TORCHINDUCTOR_CACHE_DIR"] = _USER_INDUCTOR_CACHE or str(work / "inductor")
        report["settings"]["inductor_cache"] = (
            f"from TORCHINDUCTOR_CACHE_DIR={_USER_INDUCTOR_CACHE}"
            if _USER_INDUCTOR_CACHE
            else "fresh (cold) per run"
        )
        for w in which:
            default_batch = WORKLOADS[w]["cpu_batch"] if device.type == "cpu" else None
            batch = args.batch_cifar if w == "cifar10" else args.batch_vits
            cfg0 = _config(w, [])
            batch = batch or default_batch or cfg0.train.batch_size
            overrides = _overrides(w, batch, args)
            cfg = _config(w, overrides)
            print(f"[{w}] building 2 batches of {batch} ...", file=sys.stderr)
            batches, build_s = _build_batches(w, cfg, 2, args.seed)
            batches_path = work / f"{w}.batches.pt"
            torch.save(batches, batches_path)
            entry: dict[str, Any] = {
                "config": _config_summary(cfg),
                "input": WORKLOADS[w]["input"],
                "crop_shapes": [list(c.shape) for c in batches[0][0]],
                "batch_preparation_s_excluded": round(build_s, 2),
                "variants": {},
            }
            specs = [
                {
                    "which": w,
                    "name": name,
                    "overrides": overrides + extra,
                    "device": str(device),
                    "threads": threads,
                    "batches": str(batches_path),
                    "warmup": args.warmup,
                    "count_flops": not args.no_flops and name.startswith("eager"),
                }
                for name, extra in _variants(device, args)
            ]
            entry["variants"] = _measure(w, specs, work, env, args, interleave)
            _derive(entry, device, args.peak_flops)
            report["results"][w] = entry

    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    _print_table(report)
    print(f"wrote {out_path}")
    return 0


def _derive(entry: dict[str, Any], device: torch.device, peak_flops: float) -> None:
    """Per variant: best step, achieved TFLOP/s, MFU (CUDA); between variants: throughput ratios.

    FLOPs come from the eager variant (the same math as compiled). Ratios are given three ways:
    from the medians, from the best (minimum) steps (interference from other work only adds
    time) and, when steps were interleaved, the median of the per-round ratios (each round's
    steps ran back to back under about the same load).
    """
    ok = {k: r for k, r in entry["variants"].items() if r.get("status") == "ok"}
    b = entry["config"]["batch_size_per_process"]
    for r in ok.values():
        r["min_step_s"] = min(r["step_s"])
        r["images_per_s_best"] = b / r["min_step_s"]
    flops = next((r["flops_per_step"] for r in ok.values() if r.get("flops_per_step")), None)
    if flops:
        entry["flops_per_step"] = flops
        for r in ok.values():
            r["achieved_tflops"] = flops / r["median_step_s"] / 1e12
            if device.type == "cuda":
                r["mfu"] = flops / r["median_step_s"] / peak_flops

    def ratio(num: str, den: str, key: str) -> None:
        n, d = ok.get(num), ok.get(den)
        if not (n and d):
            return
        ratios[key] = n["images_per_s"] / d["images_per_s"]
        ratios[key + "_best"] = n["images_per_s_best"] / d["images_per_s_best"]
        if len(n["step_s"]) == len(d["step_s"]):
            ratios[key + "_paired_median"] = statistics.median(
                dt_ / nt for nt, dt_ in zip(n["step_s"], d["step_s"], strict=True)
            )

    ratios: dict[str, float] = {}
    ratio("compiled_fp32", "eager_fp32", "compiled_over_eager_fp32")
    ratio("compiled_bf16", "eager_bf16", "compiled_over_eager_bf16")
    ratio("compiled_bf16", "eager_fp32", "compiled_bf16_over_eager_fp32")
    ratio("eager_bf16", "eager_fp32", "eager_bf16_over_eager_fp32")
    entry["ratios"] = ratios


def _print_table(report: dict[str, Any]) -> None:
    d = report["device"]
    print(f"\n{d['name']} ({d['type']}), torch {report['torch']}, timm {report['timm']}, {report['date']}")
    hdr = (
        f"{'workload':9} {'variant':14} {'batch':>5} {'s/step':>8} {'best':>8} {'img/s':>8} "
        f"{'peak MiB':>9} {'TFLOP/s':>8} {'MFU':>6}"
    )
    print(hdr)
    print("-" * len(hdr))
    for w, e in report["results"].items():
        b = e["config"]["batch_size_per_process"]
        for name, r in e["variants"].items():
            if r.get("status") != "ok":
                print(f"{w:9} {name:14} {b:>5} FAILED: {str(r.get('error'))[:60]}")
                continue
            print(
                f"{w:9} {name:14} {b:>5} {r['median_step_s']:>8.3f} {r['min_step_s']:>8.3f} {r['images_per_s']:>8.2f} "
                f"{_fmt(r.get('peak_memory_mib'), '9.0f')} {_fmt(r.get('achieved_tflops'), '8.3f')} "
                f"{_fmt(r.get('mfu'), '6.1%')}"
            )
        for k, x in e["ratios"].items():
            print(f"{w:9} {k}: {x:.2f}x")
    print("s/step: median of the timed steps; best: the fastest; img/s from the median")


if __name__ == "__main__":
    raise SystemExit(main())
