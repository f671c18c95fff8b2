"""The training engine, the same for every method (:mod:`mugs.methods`): one student/teacher step,
the epoch loop, checkpoint and resume."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from mugs import checkpoint as ckpt
from mugs.callbacks import Callback
from mugs.config import MugsConfig, config_from_checkpoint
from mugs.data.datasets import SeededAugmentDataset, load_split
from mugs.data.pipeline import multicrop_dataset
from mugs.data.sampler import ResumableSampler
from mugs.distributed import DistContext, all_reduce_mean, is_dist
from mugs.methods.base import Method
from mugs.methods.registry import method_class
from mugs.optim import build_optimizer, cancel_last_layer_grad, clip_gradients_per_tensor, set_schedule
from mugs.schedules import cosine_schedule


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops."""


class Trainer:
    def __init__(
        self,
        cfg: MugsConfig,
        out_dir: str | Path,
        callbacks: Sequence[Callback] = (),
        device: torch.device | None = None,
        dist_ctx: DistContext | None = None,
        iters_per_epoch: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.callbacks = list(callbacks)
        self.dist = dist_ctx or DistContext()
        if device is None:
            device = torch.device(f"cuda:{self.dist.local_rank}" if torch.cuda.is_available() else "cpu")
        self.device = device

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.method: Method = method_class(cfg.method.name)(cfg).to(device)
        multi = is_dist() and self.dist.world_size > 1
        self.method.sync_batchnorm(multi, device, self.dist.is_main)
        self.optimizer = build_optimizer(self.student, device)
        self._ema_pairs = self.method.ema_pairs()
        self.model = (
            DistributedDataParallel(
                self.student,
                device_ids=[device.index] if device.type == "cuda" else None,
                gradient_as_bucket_view=True,  # gradients live in the all-reduce buckets: no copies
            )
            if is_dist()  # a process group of one (torchrun --nproc_per_node 1) too
            else self.student
        )
        if cfg.train.compile:
            self.student.backbone.compile()
            self.teacher.backbone.compile()
        use_bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
        self.autocast = (
            (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16))
            if use_bf16
            else nullcontext
        )
        torch.manual_seed(cfg.seed + self.dist.rank)

        self.step = 0
        self.stop_requested = False
        self._dataset: SeededAugmentDataset | None = None
        self._collate: Callable | None = None
        self._sampler: ResumableSampler | None = None
        self._monitor: Any = None
        self.iters_per_epoch = iters_per_epoch or self._build_data()
        self._build_schedules()

    # ----------------------------------------------------------------- setup
    @property
    def student(self) -> torch.nn.Module:
        return self.method.student

    @property
    def teacher(self) -> torch.nn.Module:
        return self.method.teacher

    def __getattr__(self, name: str) -> Any:
        """The method's own parts (Mugs: ``loss``, ``student_memory``, ``teacher_memory``)."""
        method = self.__dict__.get("method")
        if method is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(method, name)

    def _build_data(self) -> int:
        cfg = self.cfg
        base = load_split(cfg.data, "train")
        self._dataset, self._collate = multicrop_dataset(
            base, cfg.data, cfg.seed, student_views=self.method.student_views, extras=self.method.view_extras()
        )
        self._sampler = ResumableSampler(
            len(base), cfg.train.batch_size, self.dist.rank, self.dist.world_size, cfg.seed
        )
        return self._sampler.batches_per_epoch

    def _build_schedules(self) -> None:
        t, ipe = self.cfg.train, self.iters_per_epoch
        global_batch = t.batch_size * self.dist.world_size
        self.lr_schedule = cosine_schedule(
            t.lr * global_batch / 256.0, t.min_lr, t.epochs, ipe, t.warmup_epochs
        )
        self.wd_schedule = cosine_schedule(t.weight_decay, t.weight_decay_end, t.epochs, ipe)
        self.momentum_schedule = cosine_schedule(t.momentum_teacher, 1.0, t.epochs, ipe)
        total = t.epochs * ipe
        self.total_steps = min(total, t.max_steps) if t.max_steps else total

    # ------------------------------------------------------------------ step
    def monitor_due(self, step: int) -> bool:
        """Whether the online kNN monitor runs after step ``step`` (counted from 1)."""
        every = self.cfg.eval.monitor_every
        return bool(every) and step % every == 0

    def log_due(self, step: int) -> bool:
        """Whether step ``step`` (counted from 1) is logged: every ``log_every``, the last, monitor steps."""
        return step % self.cfg.train.log_every == 0 or step == self.total_steps or self.monitor_due(step)

    @torch.no_grad()
    def _global_values(self, total: torch.Tensor, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        """The loss and its terms of the global batch: the mean over ranks (each rank's loss is
        the mean over its images, and every rank holds as many), so a DDP run logs what one
        process on the same global batch would. One small all-reduce; none in one process."""
        stacked = torch.stack([total.detach().float(), *(v.detach().float() for v in terms.values())])
        stacked = all_reduce_mean(stacked).tolist()
        return dict(zip(["loss", *terms], stacked, strict=True))

    def train_step(
        self,
        crops: list[torch.Tensor],
        weak: torch.Tensor,
        diagnose: bool | None = None,
        extras: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """One optimisation step on a batch of crops [teacher g1, g2, student g1, g2, locals...].

        ``diagnose`` (default: whether this step is logged, :meth:`log_due`) adds the collapse
        diagnostics ``diag/<branch>/<kind>`` (:mod:`mugs.diagnostics`); they change no numerics.
        ``extras``: what the method's views carry besides the crops (PW-Self: crop geometry).
        """
        cfg, it = self.cfg, self.step
        if diagnose is None:
            diagnose = self.log_due(it + 1)
        diag: dict[str, torch.Tensor] | None = {} if diagnose else None
        epoch = it // self.iters_per_epoch
        lr, wd, mom = (float(s[it]) for s in (self.lr_schedule, self.wd_schedule, self.momentum_schedule))
        set_schedule(self.optimizer, lr, wd, cfg.train.patch_embed_lr_mult)
        with self.autocast():
            total, terms = self.method.loss_terms(self.model, crops, weak, epoch, diag, extras)
        values = self._global_values(total, terms)
        loss_value = values.pop("loss")
        if not math.isfinite(loss_value):  # every rank sees the same mean: all stop together
            parts = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
            raise NonFiniteLossError(f"loss is {loss_value} at step {it + 1} (epoch {epoch}): {parts}")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if cfg.train.clip_grad > 0:
            clip_gradients_per_tensor(self.student, cfg.train.clip_grad)
        cancel_last_layer_grad(self.student, epoch, cfg.train.freeze_last_layer)
        self.optimizer.step()
        with torch.no_grad():
            s_params = [s for s, _ in self._ema_pairs]
            t_params = [t for _, t in self._ema_pairs]
            torch._foreach_mul_(t_params, mom)
            torch._foreach_add_(t_params, s_params, alpha=1.0 - mom)
        self.method.after_step(it + 1)
        self.step += 1
        out = {"step": self.step, "epoch": epoch, "loss": loss_value, "lr": lr, "wd": wd, "momentum": mom}
        for k, v in values.items():
            out[f"loss/{k}"] = v
        out.update(self.method.logged_values(epoch))
        for k, v in (diag or {}).items():
            out[k] = v.item()
        return out

    # ----------------------------------------------------------------- loops
    def _loader(self, epoch: int, start_batch: int) -> DataLoader:
        assert self._dataset is not None and self._sampler is not None
        self._dataset.set_epoch(epoch)
        self._sampler.set_epoch(epoch, start_batch)
        nw = self.cfg.data.num_workers
        return DataLoader(
            self._dataset,
            batch_size=self.cfg.train.batch_size,
            sampler=self._sampler,
            collate_fn=self._collate,
            num_workers=nw,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.cfg.seed + epoch),
            persistent_workers=False,
            prefetch_factor=4 if nw > 0 else None,
        )

    def monitor(self) -> float:
        """The online kNN monitor (held-out training images) on the teacher backbone."""
        if self._monitor is None:
            from mugs.eval.monitor import KnnMonitor

            self._monitor = KnnMonitor(self.cfg)
        with self.autocast():
            return self._monitor(self.teacher.backbone, self.device)

    def _agree_on_stop(self) -> None:
        """Ranks may see a signal at different steps; all stop at the first step any rank saw it."""
        if is_dist() and self.dist.world_size > 1:
            flag = torch.tensor([1.0 if self.stop_requested else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self.stop_requested = bool(flag.item())

    def request_stop(self) -> None:
        """Ask the loop to checkpoint and return at the next step boundary (preemption)."""
        self.stop_requested = True

    def fit(self) -> str:
        """Train to ``total_steps``; returns "completed" or "preempted". Raises on a non-finite loss."""
        t = self.cfg.train
        callbacks = self.callbacks if self.dist.is_main else []  # rank 0 alone logs and writes
        for cb in callbacks:
            cb.on_train_start(self)
        status = "failed"
        try:
            last_time, last_step = time.perf_counter(), self.step
            global_batch = t.batch_size * self.dist.world_size
            while self.step < self.total_steps and not self.stop_requested:
                epoch, start = divmod(self.step, self.iters_per_epoch)
                for crops, weak, *more in self._loader(epoch, start):
                    crops = [c.to(self.device, non_blocking=True) for c in crops]
                    extras = {k: v.to(self.device) for k, v in more[0].items()} if more else None
                    metrics = self.train_step(crops, weak.to(self.device), extras=extras)
                    monitor_due = self.monitor_due(self.step)
                    if self.log_due(self.step):
                        now = time.perf_counter()
                        metrics["images_per_s"] = (
                            global_batch * (self.step - last_step) / max(now - last_time, 1e-9)
                        )
                        if monitor_due and self.dist.is_main:
                            metrics["monitor/knn_top1"] = self.monitor()
                        last_time, last_step = time.perf_counter(), self.step
                        for cb in callbacks:
                            cb.on_step_end(self, metrics)
                    if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                        self.save_checkpoint()
                    self._agree_on_stop()
                    if self.step >= self.total_steps or self.stop_requested:
                        break
                at_epoch_end = self.step % self.iters_per_epoch == 0
                if at_epoch_end and self.step < self.total_steps and not self.stop_requested:
                    self.save_checkpoint(epoch_end=True)
            self.save_checkpoint(epoch_end=self.step % self.iters_per_epoch == 0)
            status = "preempted" if self.stop_requested and self.step < self.total_steps else "completed"
            return status
        finally:
            for cb in callbacks:
                cb.on_train_end(self, status)

    # ------------------------------------------------------------ checkpoint
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / ckpt.CHECKPOINT_NAME

    def state_dict(self) -> dict[str, Any]:
        rng = ckpt.rng_state()
        rngs: list[Any] = [rng]
        if is_dist() and self.dist.world_size > 1:
            rngs = [None] * self.dist.world_size
            dist.all_gather_object(rngs, rng)
        return {
            "step": self.step,
            "iters_per_epoch": self.iters_per_epoch,
            "world_size": self.dist.world_size,
            "config": self.cfg.to_dict(),
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict(),
            **self.method.extra_state(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": None,  # bf16 autocast needs no loss scaling
            "rng": rngs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])
        self.method.load_extra_state(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        rngs = state["rng"]
        ckpt.set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])

    def save_checkpoint(self, epoch_end: bool = False) -> Path:
        state = self.state_dict()
        if self.dist.is_main:
            ckpt.atomic_save(state, self.checkpoint_path)
            if epoch_end and self.cfg.train.keep_epoch_checkpoints:
                ep = self.step // self.iters_per_epoch
                ckpt.atomic_save(state, self.out_dir / f"checkpoint_epoch{ep:04d}.pth")
            for cb in self.callbacks:
                cb.on_checkpoint(self, self.checkpoint_path)
        if is_dist():
            dist.barrier()
        return self.checkpoint_path

    def maybe_resume(self) -> bool:
        """Load ``out_dir/checkpoint.pth`` if present. Refuses a checkpoint of a different model/method."""
        if self.dist.is_main:  # a kill during an earlier save leaves its temporary file behind
            ckpt.remove_stale_temps(self.out_dir, ckpt.CHECKPOINT_NAME)
        if not self.checkpoint_path.exists():
            return False
        state = ckpt.load(self.checkpoint_path)
        saved = config_from_checkpoint(state["config"])
        for section in ("model", "method", "data"):
            a, b = getattr(saved, section), getattr(self.cfg, section)
            if section == "data":
                a, b = (
                    (a.dataset, a.image_size, a.local_crops_number),
                    (b.dataset, b.image_size, b.local_crops_number),
                )
            if a != b:
                raise ValueError(
                    f"{self.checkpoint_path}: saved with a different {section} configuration; "
                    "use a new --out directory or the same config"
                )
        if state["world_size"] != self.dist.world_size or state["iters_per_epoch"] != self.iters_per_epoch:
            raise ValueError(
                f"{self.checkpoint_path}: saved with world size {state['world_size']} and "
                f"{state['iters_per_epoch']} iterations/epoch; now {self.dist.world_size} and {self.iters_per_epoch}"
            )
        self.load_state_dict(state)
        return True
