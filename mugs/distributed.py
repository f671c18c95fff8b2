"""Process-group setup (single process, torchrun, SLURM) and collective helpers."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def _first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM nodelist such as ``node[003-005,007],gpu1``."""
    m = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist)
    if not m:
        return nodelist
    prefix, _, ranges = m.groups()
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return f"{prefix}{first}"


def init_distributed(backend: str | None = None) -> DistContext:
    """Initialise from torchrun (RANK/WORLD_SIZE) or SLURM (SLURM_PROCID/SLURM_NTASKS) env; else one process."""
    env = os.environ
    torchrun = "RANK" in env and "WORLD_SIZE" in env
    if torchrun:
        r, ws = int(env["RANK"]), int(env["WORLD_SIZE"])
        lr = int(env.get("LOCAL_RANK", 0))
    elif "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        r, ws = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        lr = int(env.get("SLURM_LOCALID", 0))
        env.setdefault("MASTER_ADDR", _first_slurm_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1")))
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
        env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"] = str(r), str(ws), str(lr)
    else:
        return DistContext()
    # under torchrun even one process gets a process group (and DDP): `torchrun --nproc_per_node 1`
    # on one GPU runs the NCCL and DDP code of a multi-GPU job
    if (ws > 1 or torchrun) and not is_dist():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(lr)
        dist.init_process_group(backend=backend, init_method="env://", rank=r, world_size=ws)
    return DistContext(rank=r, world_size=ws, local_rank=lr)


@torch.no_grad()
def concat_all_gather(t: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 (rank order); identity in a single process. No gradient."""
    if not is_dist() or world_size() == 1:
        return t
    out = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out, dim=0)


@torch.no_grad()
def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if not is_dist() or world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / world_size()
