"""Hold our trainer's step against the official Mugs implementation, step by step.

    python benchmarks/official_parity.py OFFICIAL_CHECKOUT [--steps 3] [--out FILE]

``OFFICIAL_CHECKOUT`` is a checkout of the official code (github.com/sail-sg/mugs: ``main.py``,
``utils.py``, ``src/``) that the user supplies; nothing of it lives in this repository. The tool
imports it from that path at run time and runs its own training step, ``main.train_one_epoch``,
on CPU in a single-process gloo group. Its CUDA calls are neutralised for the run
(``Tensor.cuda``/``Module.cuda`` return the object itself, ``torch.cuda.synchronize`` does
nothing, the metric logger's cross-process sync, a no-op with one process, is skipped) and its
data prefetcher is replaced by one that hands over prepared batches; the checkout is never
edited.

Both sides get the same start and the same inputs:

* **weights**: our ``Trainer`` builds and seeds student and teacher; their state dicts are mapped
  onto the official networks (``backbone.vit.*`` -> ``backbone.*``, our local-group block ->
  ``backbone.relation_blocks.0``, its head -> ``local_group_head``), strictly, so every tensor
  of either side has its counterpart;
* **queues, memories, centre**: ours copied into the official buffers; the official local-group
  memory's three buffers (``queue_q`` looked up, ``queue_k`` read, ``queue_v``) all get our one
  bank, as they agree once the memory has been filled;
* **crops**: one list of tensors per step (2 teacher + 2 student 224-px crops and local 96-px
  crops of smooth random images, the official crop order), fed to both; the same weak-augmentation
  flags;
* **optimiser and schedules**: the official ``get_optimizer`` (AdamW, four parameter groups, its
  cosine schedules) and ours from the same numbers; one iteration per epoch, so the epoch-indexed
  parts (teacher temperature warm-up, last-layer freeze) change from step to step.

The official local-group memory advances its pointer by twice the batch when a write does not
wrap (ours: a plain FIFO). By default our memory pointers are set to the official ones before
each step, so both write to the same rows; ``--no-emulate-memory-pointer`` leaves them apart and
the JSON shows where the memories then differ. The official architecture names fix ViT widths,
so the default network is the official ``VisionTransformer`` class at the demo preset's widths
(registered under an extra name at run time); ``--arch vit_tiny`` uses the official factory.

Per step it records each loss term and the total on both sides, their largest difference, the
schedules, and the max abs / relative difference of student and teacher parameters, queues,
memories and centre. JSON to ``benchmarks/results/official_parity.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import platform
import subprocess
import sys
import tempfile
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import timm  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from mugs.checkpoint import atomic_write_text  # noqa: E402
from mugs.config import MugsConfig, build_config  # noqa: E402
from mugs.engine import Trainer  # noqa: E402

TERMS = (("instance", "instance-sup."), ("local_group", "local-group-sup."), ("group", "group-sup."))
CUSTOM_ARCH = "parity_vit"
GOAL = 1e-5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkout", type=Path, help="official sail-sg/mugs checkout (main.py, utils.py, src/)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--local-crops", type=int, default=4)
    p.add_argument("--arch", default=CUSTOM_ARCH, help=f"{CUSTOM_ARCH} (widths below) or vit_tiny/small/...")
    p.add_argument("--embed-dim", type=int, default=96)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--num-heads", type=int, default=3)
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--out-dim", type=int, default=256, help="instance and local-group output dim")
    p.add_argument("--group-out-dim", type=int, default=1024)
    p.add_argument("--queue-size", type=int, default=20, help="instance / local-group queues and memory")
    p.add_argument("--topk", type=int, default=8)
    p.add_argument("--norm-last-layer", action="store_true")
    p.add_argument("--lr", type=float, default=0.064, help="base lr per 256 images (0.001 at batch 4)")
    p.add_argument("--epochs", type=int, default=10, help="schedule length; one iteration per epoch")
    p.add_argument("--warmup-epochs", type=int, default=0)
    p.add_argument("--momentum-teacher", type=float, default=0.99)
    p.add_argument("--no-emulate-memory-pointer", dest="emulate_pointer", action="store_false")
    p.add_argument(
        "--no-contrast", dest="contrast", action="store_false", help="skip the second, unemulated run"
    )
    p.add_argument(
        "--pos-embed-interp",
        default="dino",
        choices=("dino", "timm"),
        help="ours; parity needs dino (timm: to see what timm's resampling changes)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "official_parity.json")
    return p.parse_args(argv)


# ------------------------------------------------------------------ official side
@contextmanager
def cpu_only_official() -> Iterator[None]:
    """Let code written for CUDA run on CPU: ``.cuda()`` returns the object, no stream sync."""
    saved = (torch.Tensor.cuda, nn.Module.cuda, torch.cuda.synchronize)
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.cuda.amp.autocast, weight_norm
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda, torch.cuda.synchronize = saved  # type: ignore[method-assign]


class PreparedBatches:
    """Stands in for the official data prefetcher: hands over (crops, weak flags) as given."""

    def __init__(self, loader: list[tuple[list[torch.Tensor], torch.Tensor]], fp16: bool = False) -> None:
        self._it = iter(loader)

    def next(self) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
        crops, weak = next(self._it, (None, None))
        return ([c.clone() for c in crops] if crops is not None else None), weak


def import_official(checkout: Path) -> types.SimpleNamespace:
    """Import the checkout's ``main``, ``utils`` and ``src.*`` (the dataset module is not needed)."""
    checkout = checkout.resolve()
    if "main" in sys.modules and getattr(sys.modules["main"], "train_one_epoch", None):
        m = sys.modules
        return types.SimpleNamespace(
            main=m["main"],
            loss=m["src.loss"],
            model=m["src.model"],
            optim=m["src.optimizer"],
            vits=m["src.vision_transformer"],
            utils=m["utils"],
        )
    missing = [
        n for n in ("main.py", "utils.py", "src/model.py", "src/loss.py") if not (checkout / n).exists()
    ]
    if missing:
        raise SystemExit(f"{checkout}: not an official Mugs checkout (missing {', '.join(missing)})")
    sys.path.insert(0, str(checkout))
    # Augmentation/dataset code is replaced by prepared batches: a stub keeps main.py importable
    # without the training-data dependencies.
    stub = types.ModuleType("src.multicropdataset")
    stub.data_prefetcher = PreparedBatches  # type: ignore[attr-defined]
    stub.get_dataset = None  # type: ignore[attr-defined]
    sys.modules["src.multicropdataset"] = stub
    import main as off_main  # type: ignore[import-not-found]
    import src.loss as off_loss  # type: ignore[import-not-found]
    import src.model as off_model  # type: ignore[import-not-found]
    import src.optimizer as off_optim  # type: ignore[import-not-found]
    import src.vision_transformer as off_vits  # type: ignore[import-not-found]
    import utils as off_utils  # type: ignore[import-not-found]

    off_main.data_prefetcher = PreparedBatches
    off_utils.SmoothedValue.synchronize_between_processes = lambda self: None
    return types.SimpleNamespace(
        main=off_main, loss=off_loss, model=off_model, optim=off_optim, vits=off_vits, utils=off_utils
    )


def official_args(off: types.SimpleNamespace, o: argparse.Namespace) -> argparse.Namespace:
    """The official argument defaults, with this comparison's settings."""
    args = off.main.get_args_parser().parse_args([])
    if o.arch == CUSTOM_ARCH:
        off.vits.__dict__[CUSTOM_ARCH] = partial(
            off.vits.VisionTransformer,
            embed_dim=o.embed_dim,
            depth=o.depth,
            num_heads=o.num_heads,
            mlp_ratio=4,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
        )
    values = {
        "arch": o.arch,
        "patch_size": o.patch_size,
        "drop_path_rate": 0.0,
        "loss_weights": [1.0, 1.0, 1.0],
        "instance_out_dim": o.out_dim,
        "local_group_out_dim": o.out_dim,
        "group_out_dim": o.group_out_dim,
        "group_bottleneck_dim": 256,
        "instance_queue_size": o.queue_size,
        "local_group_queue_size": o.queue_size,
        "local_group_knn_top_n": o.topk,
        "norm_last_layer": o.norm_last_layer,
        "local_crops_number": o.local_crops,
        "batch_size_per_gpu": o.batch_size,
        "epochs": o.epochs,
        "warmup_epochs": o.warmup_epochs,
        "lr": o.lr,
        "momentum_teacher": o.momentum_teacher,
        "group_warmup_teacher_temp": 0.04,
        "group_teacher_temp": 0.07,
        "group_warmup_teacher_temp_epochs": min(3, o.epochs),
        "use_fp16": False,
        "world_size": 1,
        "rank": 0,
    }
    for k, v in values.items():
        setattr(args, k, v)
    return args


def our_config(a: argparse.Namespace, o: argparse.Namespace) -> MugsConfig:
    """Our configuration with the same numbers as the official arguments ``a``."""
    custom = o.arch == CUSTOM_ARCH
    model = {
        "arch": "vit_tiny" if custom else o.arch,
        "patch_size": a.patch_size,
        "drop_path_rate": a.drop_path_rate,
        "head_hidden_dim": 2048,  # the official heads' fixed widths
        "predictor_hidden_dim": 4096,
        "instance_out_dim": a.instance_out_dim,
        "local_group_out_dim": a.local_group_out_dim,
        "group_out_dim": a.group_out_dim,
        "group_bottleneck_dim": int(a.group_bottleneck_dim),
        "norm_last_layer": a.norm_last_layer,
        "norm_before_pred": a.norm_before_pred,
        "use_bn_in_head": a.use_bn_in_head,
        "pos_embed_interp": o.pos_embed_interp,
        **({"embed_dim": o.embed_dim, "depth": o.depth, "num_heads": o.num_heads} if custom else {}),
    }
    method = {
        "loss_weights": list(a.loss_weights),
        "instance_queue_size": a.instance_queue_size,
        "instance_temp": a.instance_temp,
        "local_group_queue_size": a.local_group_queue_size,
        "local_group_temp": a.local_group_temp,
        "memory_size": a.local_group_queue_size,  # the official memory shares this size
        "topk": a.local_group_knn_top_n,
        "group_student_temp": a.group_student_temp,
        "group_warmup_teacher_temp": a.group_warmup_teacher_temp,
        "group_teacher_temp": a.group_teacher_temp,
        "group_warmup_teacher_temp_epochs": a.group_warmup_teacher_temp_epochs,
        "center_momentum": 0.9,
    }
    train = {
        "epochs": a.epochs,
        "batch_size": a.batch_size_per_gpu,
        "lr": a.lr,
        "min_lr": a.min_lr,
        "warmup_epochs": a.warmup_epochs,
        "weight_decay": a.weight_decay,
        "weight_decay_end": a.weight_decay_end,
        "momentum_teacher": a.momentum_teacher,
        "clip_grad": a.clip_grad,
        "freeze_last_layer": a.freeze_last_layer,
        "patch_embed_lr_mult": a.patch_embed_lr_mult,
        "precision": "fp32",
    }
    data = {"image_size": 224, "local_crop_size": 96, "local_crops_number": a.local_crops_number}
    values = {"model": model, "method": method, "train": train, "data": data, "seed": o.seed}
    return build_config(None, values, check_data=False)


# ------------------------------------------------------------------ state mapping
def official_key(ours: str) -> str:
    """Our parameter name -> the official network's."""
    for a, b in (
        ("backbone.vit.", "backbone."),
        ("local_group.block.", "backbone.relation_blocks.0."),
        ("local_group.head.", "local_group_head."),
    ):
        if ours.startswith(a):
            return b + ours[len(a) :]
    return ours


def buffer_pairs(tr: Trainer, st: dict[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(ours, official) for every queue, memory and centre; pointers separately."""
    lo = st["losses"]
    pairs = {
        "instance_queue": (tr.loss.instance.queue, lo["instance-sup."].queue),
        "local_group_queue": (tr.loss.local_group.queue, lo["local-group-sup."].queue),
        "group_center": (tr.loss.group.center, lo["group-sup."].center),
    }
    for side, ours in (("student", tr.student_memory), ("teacher", tr.teacher_memory)):
        blk = st[f"{side}_mem"].block
        for q in ("queue_q", "queue_k", "queue_v"):
            pairs[f"{side}_memory.{q}"] = (ours.bank, getattr(blk, q))
    return pairs


def pointer_pairs(tr: Trainer, st: dict[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    lo = st["losses"]
    return {
        "instance_queue": (tr.loss.instance.ptr, lo["instance-sup."].queue_ptr),
        "local_group_queue": (tr.loss.local_group.ptr, lo["local-group-sup."].queue_ptr),
        "student_memory": (tr.student_memory.ptr, st["student_mem"].block.queue_ptr),
        "teacher_memory": (tr.teacher_memory.ptr, st["teacher_mem"].block.queue_ptr),
    }


def build_official(off: types.SimpleNamespace, args: argparse.Namespace, tr: Trainer) -> dict[str, Any]:
    """The official networks, memories, losses and optimiser, started from our trainer's state."""
    student, teacher, student_mem, teacher_mem = off.model.get_model(args)
    for ours, theirs in ((tr.student, student), (tr.teacher, teacher)):
        theirs.load_state_dict(
            {official_key(k): v.clone() for k, v in ours.state_dict().items()}, strict=True
        )
    for p in teacher.parameters():
        p.requires_grad = False
    losses, weights = off.loss.get_multi_granular_loss(args)
    st = {"student": student, "teacher": teacher, "student_mem": student_mem, "teacher_mem": teacher_mem}
    st.update(losses=losses, weights=weights)
    with torch.no_grad():
        for ours, theirs in buffer_pairs(tr, st).values():
            theirs.copy_(ours)
        for ours, theirs in pointer_pairs(tr, st).values():
            theirs.fill_(int(ours))
    st["student_ddp"] = nn.parallel.DistributedDataParallel(student)
    opt, scaler, lr_s, wd_s, mom_s = off.optim.get_optimizer(st["student_ddp"], tr.iters_per_epoch, args)
    st.update(optimizer=opt, scaler=scaler, lr=lr_s, wd=wd_s, momentum=mom_s)
    return st


# ------------------------------------------------------------------ inputs
def smooth_images(gen: torch.Generator, n: int, size: int) -> torch.Tensor:
    """Random images with image-like spatial correlation: coarse noise upsampled, plus fine noise."""
    coarse = torch.randn(n, 3, 8, 8, generator=gen)
    img = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return img + 0.1 * torch.randn(n, 3, size, size, generator=gen)


def random_crop(gen: torch.Generator, img: torch.Tensor, lo: int, hi: int, out: int) -> torch.Tensor:
    """A square crop of side in [lo, hi] at a random place, resized to ``out``, flipped half the time."""
    side = int(torch.randint(lo, hi + 1, (1,), generator=gen))
    y, x = (int(torch.randint(0, img.shape[-1] - side + 1, (1,), generator=gen)) for _ in range(2))
    crop = F.interpolate(img[None, :, y : y + side, x : x + side], size=(out, out), mode="bilinear")[0]
    return crop.flip(-1) if bool(torch.rand(1, generator=gen) < 0.5) else crop


def make_batch(gen: torch.Generator, batch: int, n_local: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """[teacher g1, g2, student g1, g2, locals...] for ``batch`` images, and weak-augmentation flags."""
    base = smooth_images(gen, batch, 256)
    crops = [torch.stack([random_crop(gen, im, 160, 256, 224) for im in base]) for _ in range(4)]
    crops += [torch.stack([random_crop(gen, im, 48, 128, 96) for im in base]) for _ in range(n_local)]
    weak = torch.rand(batch, generator=gen) < 0.6
    return crops, weak


# ------------------------------------------------------------------ one step each
def official_step(
    off: types.SimpleNamespace, st: dict[str, Any], batch: tuple[list[torch.Tensor], torch.Tensor], epoch: int
) -> dict[str, float]:
    """One official training iteration (its ``train_one_epoch`` over a one-batch epoch)."""
    args = st["args"]
    return off.main.train_one_epoch(
        st["student_ddp"],
        st["teacher"],
        st["teacher"],
        st["losses"],
        st["weights"],
        [batch],
        st["optimizer"],
        st["lr"],
        st["wd"],
        st["momentum"],
        epoch,
        st["scaler"],
        st["student_mem"],
        st["teacher_mem"],
        logging.getLogger("official"),
        args,
    )


def diff(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float]:
    """(max |a - b|, max |a - b| / max |b|) in float64."""
    a, b = ours.detach().double(), theirs.detach().double()
    d = float((a - b).abs().max()) if a.numel() else 0.0
    scale = float(b.abs().max()) if b.numel() else 0.0
    return d, (d / scale if scale > 0 else d)


def param_diffs(ours: nn.Module, theirs: nn.Module) -> dict[str, Any]:
    """Largest differences over all parameters: element-wise abs, abs / max |official| per tensor,
    and ||delta|| / ||official|| per tensor; where the largest abs one is (tensor, flat index)."""
    named = dict(theirs.named_parameters())
    out: dict[str, Any] = {"max_abs": 0.0, "max_abs_at": "", "max_abs_index": 0, "max_rel": 0.0}
    out.update({"max_rel_at": "", "max_norm_rel": 0.0, "elements_over_1e-6": 0, "elements": 0})
    for k, p in ours.named_parameters():
        q = named[official_key(k)]
        d, r = diff(p, q)
        delta = (p.detach().double() - q.detach().double()).flatten()
        out["elements_over_1e-6"] += int((delta.abs() > 1e-6).sum())
        out["elements"] += delta.numel()
        out["max_norm_rel"] = max(out["max_norm_rel"], float(delta.norm() / q.detach().double().norm()))
        if d > out["max_abs"]:
            out.update(max_abs=d, max_abs_at=k, max_abs_index=int(delta.abs().argmax()))
        if r > out["max_rel"]:
            out.update(max_rel=r, max_rel_at=k)
    return out


class GradTap:
    """Keeps a copy of every gradient as the optimiser receives it (after clipping and freezing)."""

    def __init__(self, opt: torch.optim.Optimizer, named: list[tuple[str, nn.Parameter]]) -> None:
        self.grads: dict[str, torch.Tensor | None] = {}
        self.params = dict(named)
        step = opt.step

        def tapped(*a: Any, **k: Any) -> Any:
            self.grads = {n: None if p.grad is None else p.grad.detach().clone() for n, p in named}
            return step(*a, **k)

        opt.step = tapped  # type: ignore[method-assign]


def differing_element_grads(ours: GradTap, theirs: GradTap) -> dict[str, Any]:
    """The official gradients of the elements whose parameters now differ by > 1e-6.

    AdamW's first update is lr * g / (|g| + eps): for |g| near eps (1e-8) round-off in g moves
    the update by up to ~lr, so at step 1 a few such elements carry the largest differences.
    """
    n, largest = 0, 0.0
    for k, h in theirs.grads.items():
        g = ours.grads[k]
        if g is None or h is None:
            continue
        mask = (ours.params[k].detach() - theirs.params[k].detach()).abs() > 1e-6
        if mask.any():
            n += int(mask.sum())
            largest = max(largest, float(h[mask].abs().max()))
    return {"elements": n, "max_abs_official_grad": largest}


def grad_diffs(ours: GradTap, theirs: GradTap, worst: dict[str, Any]) -> dict[str, Any]:
    """Gradient agreement, and both gradients at the element whose parameter differs most."""
    out: dict[str, Any] = {"max_abs": 0.0, "max_abs_at": "", "max_rel": 0.0, "max_rel_at": "", "none": []}
    for k, g in ours.grads.items():
        h = theirs.grads[k]
        if g is None or h is None:
            if (g is None) != (h is None):
                raise RuntimeError(f"{k}: a gradient on one side only")
            out["none"].append(k)
            continue
        d, r = diff(g, h)
        if d > out["max_abs"]:
            out.update(max_abs=d, max_abs_at=k)
        if r > out["max_rel"]:
            out.update(max_rel=r, max_rel_at=k)
    out["differing_elements"] = differing_element_grads(ours, theirs)
    key, i = official_key(worst["max_abs_at"]), worst["max_abs_index"]
    g, h = ours.grads.get(key), theirs.grads.get(key)
    out["at_max_param_diff"] = {
        "tensor": worst["max_abs_at"],
        "index": i,
        "grad_ours": None if g is None else float(g.flatten()[i]),
        "grad_official": None if h is None else float(h.flatten()[i]),
    }
    return out


def compare_state(tr: Trainer, st: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "student_params": param_diffs(tr.student, st["student"]),
        "teacher_params": param_diffs(tr.teacher, st["teacher"]),
        "buffers": {},
        "pointers": {},
    }
    for name, (a, b) in buffer_pairs(tr, st).items():
        d, r = diff(a, b)
        out["buffers"][name] = {"max_abs": d, "max_rel": r}
    for name, (a, b) in pointer_pairs(tr, st).items():
        out["pointers"][name] = {"ours": int(a), "official": int(b)}
    return out


def run_step(off: types.SimpleNamespace, st: dict[str, Any], tr: Trainer, batch: Any, emulate: bool) -> dict:
    step = tr.step
    epoch = step // tr.iters_per_epoch
    aligned = {}
    if emulate:
        for name in ("student_memory", "teacher_memory"):
            ours, theirs = pointer_pairs(tr, st)[name]
            aligned[name] = {"ours_before": int(ours), "set_to_official": int(theirs)}
            ours.fill_(int(theirs))
    off_stats = official_step(off, st, batch, epoch)
    crops, weak = batch
    ours = tr.train_step([c.clone() for c in crops], weak.clone())
    losses = {}
    for mine, theirs in (*TERMS, ("total", "loss")):
        o = ours["loss" if mine == "total" else f"loss/{mine}"]
        t = off_stats[theirs]
        losses[mine] = {"ours": o, "official": t, "abs_diff": abs(o - t)}
    sched = {
        "lr": {"ours": ours["lr"], "official": off_stats["lr"]},
        "wd": {"ours": ours["wd"], "official": off_stats["wd"]},
        "momentum": {"ours": ours["momentum"], "official": float(st["momentum"][step])},
        "teacher_temp": {
            "ours": ours["teacher_temp"],
            "official": float(st["losses"]["group-sup."].teacher_temp_schedule[epoch]),
        },
    }
    state = compare_state(tr, st)
    state["student_grads"] = grad_diffs(*st["taps"], state["student_params"])
    return {
        "step": step + 1,
        "epoch": epoch,
        "weak_flags": [bool(x) for x in weak],
        "memory_pointer_alignment": aligned or None,
        "losses": losses,
        "max_abs_loss_diff": max(v["abs_diff"] for v in losses.values()),
        "schedules": sched,
        **state,
    }


# ------------------------------------------------------------------ report
def checkout_commit(checkout: Path) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    if r.returncode != 0:
        return None
    return r.stdout.strip() or None


def print_step(rec: dict[str, Any]) -> None:
    print(f"step {rec['step']} (epoch {rec['epoch']}): max |dloss| = {rec['max_abs_loss_diff']:.3e}")
    for name, v in rec["losses"].items():
        print(f"  {name:<12} ours {v['ours']:.8f}  official {v['official']:.8f}  |d| {v['abs_diff']:.2e}")
    for side in ("student_params", "teacher_params"):
        p = rec[side]
        print(f"  {side:<15} max abs {p['max_abs']:.2e} ({p['max_abs_at']})  max rel {p['max_rel']:.2e}")
    g = rec["student_grads"]
    at = g["at_max_param_diff"]
    print(f"  student_grads   max abs {g['max_abs']:.2e} ({g['max_abs_at']})  max rel {g['max_rel']:.2e}")
    print(
        f"    at the largest parameter difference: grad ours {at['grad_ours']:.3e}, official {at['grad_official']:.3e}"
    )
    de = g["differing_elements"]
    print(
        f"    {de['elements']} elements differ by > 1e-6; their largest |grad|: {de['max_abs_official_grad']:.2e}"
    )
    worst = max(rec["buffers"].items(), key=lambda kv: kv[1]["max_abs"])
    print(f"  buffers         max abs {worst[1]['max_abs']:.2e} ({worst[0]})")
    ptrs = ", ".join(f"{k} {v['ours']}/{v['official']}" for k, v in rec["pointers"].items())
    print(f"  pointers (ours/official): {ptrs}")


ALIGNMENT_NOTES = [
    "weights: our Trainer's seeded student/teacher state dicts mapped onto the official networks (strict)",
    "queues, memories, centre: ours copied into the official buffers; the official memory's "
    "queue_q, queue_k and queue_v all start as our one bank",
    "crops: the same tensors fed to both (2 teacher + 2 student 224-px crops, local 96-px crops of "
    "smooth random images, official order); same weak-augmentation flags",
    "optimiser: official get_optimizer (AdamW, 4 groups, its cosine schedules) vs ours; fp32, CPU; "
    "one iteration per epoch (epoch-indexed teacher temperature and last-layer freeze change per step)",
    "drop_path_rate 0 on both (stochastic depth draws random numbers in a different order)",
    "official CUDA calls neutralised at run time (.cuda() identity, no cuda.synchronize, no metric "
    "sync); single-process gloo group for its collectives; student in DDP as in its main.py",
    "pos_embed sized for 224 px on both (global crops used as is, local crops resampled)",
]


def main(argv: list[str] | None = None) -> int:
    o = parse_args(argv)
    torch.manual_seed(o.seed)
    contrast = None
    with tempfile.TemporaryDirectory() as tmp, cpu_only_official():
        dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=0, world_size=1)
        try:
            records, header = run(o, Path(tmp), o.emulate_pointer)
            if o.emulate_pointer and o.contrast:
                print("-- again without memory-pointer emulation (the deliberate difference) --")
                contrast = run(o, Path(tmp), emulate=False)[0]
        finally:
            dist.destroy_process_group()
    result = summarise(o, header, records, contrast)
    o.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(o.out, json.dumps(result, indent=2) + "\n")
    s = result["summary"]
    print(
        f"max |dloss| over {o.steps} steps: {s['max_abs_loss_diff']:.3e} (goal < {GOAL:g}: {s['goal_met']})"
    )
    print(f"wrote {o.out}")
    return 0 if s["goal_met"] else 1


def run(o: argparse.Namespace, tmp: Path, emulate: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Build both sides from one start and take ``o.steps`` steps on the same batches."""
    off = import_official(o.checkout)
    args = official_args(off, o)
    cfg = our_config(args, o)
    tr = Trainer(cfg, tmp / "ours", device=torch.device("cpu"), iters_per_epoch=1)
    st = build_official(off, args, tr)
    st["args"] = args
    st["taps"] = (
        GradTap(tr.optimizer, [(official_key(k), p) for k, p in tr.student.named_parameters()]),
        GradTap(st["optimizer"], list(st["student"].named_parameters())),
    )
    start = compare_state(tr, st)
    if start["student_params"]["max_abs"] or start["teacher_params"]["max_abs"]:
        raise RuntimeError(f"the two sides do not start equal: {start}")
    gen = torch.Generator().manual_seed(o.seed + 1)
    batches = [make_batch(gen, o.batch_size, o.local_crops) for _ in range(o.steps)]
    records = []
    for batch in batches:
        rec = run_step(off, st, tr, batch, emulate)
        print_step(rec)
        records.append(rec)
    n_params = sum(p.numel() for p in tr.student.parameters())
    header = {"config": cfg.to_dict(), "student_parameters": n_params, "start": start}
    return records, header


def contrast_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Losses and memories of the run without pointer emulation, step by step."""
    steps = []
    for r in records:
        mem = {k: v["max_abs"] for k, v in r["buffers"].items() if k.endswith("queue_q")}
        terms = {k: v["abs_diff"] for k, v in r["losses"].items()}
        steps.append(
            {"step": r["step"], "loss_abs_diff": terms, "memory_max_abs_diff": mem, "pointers": r["pointers"]}
        )
    return {
        "what": "the same comparison with our plain-FIFO memory pointer left as it is",
        "max_abs_loss_diff_per_step": [r["max_abs_loss_diff"] for r in records],
        "steps": steps,
    }


READING_ROUNDOFF = (
    "forward and gradients agree to float32 round-off (different kernels: timm's fused attention, "
    "foreach AdamW and norms); AdamW's first update lr * g / (|g| + 1e-8) turns round-off in "
    "near-zero gradients (sign flips at |g| ~ 1e-9) into parameter differences of up to ~lr on a "
    "few elements, which the next steps carry into the losses"
)


def findings(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the remaining differences come from, in this run's numbers."""
    first = records[0]
    g, p = first["student_grads"], first["student_params"]
    return {
        "step1_grad_max_rel_diff": g["max_rel"],
        "step1_param_max_abs_diff": p["max_abs"],
        "step1_param_max_abs_diff_at": p["max_abs_at"],
        "step1_grads_there": [g["at_max_param_diff"]["grad_ours"], g["at_max_param_diff"]["grad_official"]],
        "step1_elements_differing_over_1e-6": g["differing_elements"]["elements"],
        "step1_their_largest_abs_grad": g["differing_elements"]["max_abs_official_grad"],
        "reading": READING_ROUNDOFF
        if g["differing_elements"]["max_abs_official_grad"] < 1e-6 and g["max_rel"] < 1e-4
        else "step 1 already differs beyond round-off: see steps[0].student_grads and .losses",
    }


def summarise(
    o: argparse.Namespace,
    header: dict[str, Any],
    records: list[dict[str, Any]],
    contrast: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    per_step = [r["max_abs_loss_diff"] for r in records]
    worst = max(per_step)
    notes = [*ALIGNMENT_NOTES, f"ours with model.pos_embed_interp={o.pos_embed_interp}"]
    notes.append(
        "memory pointer: ours set to the official pointer before each step (the official one advances "
        "by twice the batch when a write does not wrap; ours is a plain FIFO), so both write the same rows"
        if o.emulate_pointer
        else "memory pointer NOT emulated: the official pointer advances by twice the batch on a "
        "non-wrapping write, ours by the batch; memories differ from the second write on"
    )
    return {
        "tool": "benchmarks/official_parity.py",
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "command": "python benchmarks/official_parity.py " + " ".join(sys.argv[1:]),
        "official": {"checkout": str(o.checkout.resolve()), "commit": checkout_commit(o.checkout)},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "timm": timm.__version__,
        },
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(o).items()},
        "alignment": notes,
        **header,
        "steps": records,
        "summary": {
            "max_abs_loss_diff": worst,
            "max_abs_loss_diff_per_step": per_step,
            "max_abs_student_param_diff_per_step": [r["student_params"]["max_abs"] for r in records],
            "max_abs_teacher_param_diff_per_step": [r["teacher_params"]["max_abs"] for r in records],
            "max_rel_student_grad_diff_per_step": [r["student_grads"]["max_rel"] for r in records],
            "goal": GOAL,
            "goal_met": bool(math.isfinite(worst) and worst < GOAL),
            "findings": findings(records),
        },
        "without_memory_pointer_emulation": contrast_summary(contrast) if contrast else None,
    }


if __name__ == "__main__":
    raise SystemExit(main())
