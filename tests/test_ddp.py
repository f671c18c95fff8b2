"""DDP with 2 CPU processes (gloo) equals one process on the same global batch.

One process trains 3 steps on 16-image multi-crop batches of real digits; two processes
(``mugs.distributed.init_distributed(backend="gloo")``) train on the same batches, rank r taking
images [8r, 8r + 8) of every crop. The per-process batch is 16 vs 8, so the global batch, and
with it the lr schedule, is the same. Queues and memories are gathered across ranks in rank
order, the group-loss centre is all-reduced and DDP averages gradients, so the mean of the two
ranks' losses equals the single-process loss and the final weights, queues, memories and centre
agree up to float rounding. Every rank reports that mean (the engine all-reduces the loss and
its terms), so both report the single-process loss.

Tolerances: the loss agrees to ~1e-7 relative. The weights differ by more (teacher ~1e-6,
student ~6e-6 after 3 steps) because AdamW normalises gradients that are pure rounding noise:
the attention key bias has an exactly-zero gradient (softmax is shift-invariant), computed as
~1e-11 noise that differs between one 16-image and two 8-image backward passes, and Adam turns
it into an lr-sized step of either sign. That noise is ~50x below the weights' movement, so the
tolerances sit ~8x above the noise and ~7x below the movement (a wrong lr fails every check).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from mugs.engine import Trainer
from tests.helpers import demo_config, real_batch

WORLD = 2
GLOBAL_BATCH = 16
N_STEPS = 3
ITERS_PER_EPOCH = 10
TEACHER_ATOL = 1e-5
STUDENT_ATOL = 5e-5


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(batch_size: int, method: str = "mugs"):
    if method == "pwself":  # the demo's PW-Self with its BatchNorm head off (per rank on CPU)
        return demo_config(
            "method.name=pwself", f"train.batch_size={batch_size}", "train.warmup_epochs=0", "train.lr=0.002",
            "train.momentum_teacher=0.9", "method.head_bn=false", "method.out_dim=64",
            "method.head_hidden_dim=64", "method.head_bottleneck_dim=32",
        )
    if method == "univip":  # UniVIP's heads without BatchNorm (per rank on CPU)
        return demo_config(
            "method.name=univip", f"train.batch_size={batch_size}", "train.warmup_epochs=0", "train.lr=0.002",
            "train.momentum_teacher=0.9", "data.local_crops_number=0", "data.strong_prob=0.0",
            "data.augment_backend=tensor", "method.head_bn=false", "method.out_dim=32",
            "method.projector_hidden_dim=64", "method.predictor_hidden_dim=64",
        )
    if method == "smog":  # SMoG's heads without BatchNorm (per rank on CPU), a reset at step 2
        return demo_config(
            "method.name=smog", f"train.batch_size={batch_size}", "train.warmup_epochs=0", "train.lr=0.002",
            "train.momentum_teacher=0.9", "data.local_crops_number=0", "method.head_bn=false",
            "method.n_groups=8", "method.bank_size=32", "method.reset_every=2", "method.out_dim=32",
            "method.projector_hidden_dim=64", "method.predictor_hidden_dim=64",
        )
    # demo preset: drop_path_rate 0.0 (no per-rank randomness in the forward pass). No lr warm-up
    # (it starts at lr 0) and a faster EMA: with the demo schedule 3 steps move the teacher only
    # ~1e-6, below any useful tolerance; here ~7e-5 (the test asserts > 5 x TEACHER_ATOL).
    return demo_config(
        f"train.batch_size={batch_size}",
        "train.warmup_epochs=0",
        "train.lr=0.002",
        # BatchNorm heads normalise per rank on CPU (SyncBatchNorm needs CUDA): off for equality.
        "model.use_bn_in_head=false",
        "train.momentum_teacher=0.9",
    )


def _state(tr: Trainer) -> dict[str, dict[str, torch.Tensor]]:
    def cpu(sd):
        return {k: v.detach().cpu().clone() for k, v in sd.items()}

    nets = {"student": cpu(tr.student.state_dict()), "teacher": cpu(tr.teacher.state_dict())}
    if tr.cfg.method.name == "smog":
        return {**nets, "groups": cpu(tr.method.groups.state_dict())}  # groups and feature bank
    if tr.cfg.method.name == "pwself":
        return {**nets, "center": cpu(tr.method.loss.state_dict())}  # the per-position centre
    if tr.cfg.method.name == "univip":
        return nets  # no state beyond the two encoders
    return {
        **nets,
        "loss": cpu(tr.loss.state_dict()),  # instance/local-group queues and the group centre
        "student_memory": cpu(tr.student_memory.state_dict()),
        "teacher_memory": cpu(tr.teacher_memory.state_dict()),
    }


def _extra_keys(method: str) -> tuple[str, ...]:
    extra = {"smog": ("groups",), "pwself": ("center",), "univip": ()}
    return extra.get(method, ("loss", "student_memory", "teacher_memory"))


def _step(tr: Trainer, batch: tuple, sl: slice | None = None) -> dict:
    """One step on ``batch`` (crops, weak[, extras]), or on its images ``sl`` (a rank's share)."""
    crops, weak, *extras = batch
    if sl is not None:
        crops, weak = [c[sl].contiguous() for c in crops], weak[sl].contiguous()
        extras = [{k: v[sl].contiguous() for k, v in e.items()} for e in extras]
    return tr.train_step(crops, weak, extras=extras[0] if extras else None)


def _worker(rank: int, port: int, batches_path: str, out_dir: str, method: str) -> None:
    """One DDP rank: train on its half of every batch, save losses and final state."""
    import torch.distributed as dist

    from mugs.distributed import init_distributed

    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    ctx = init_distributed(backend="gloo")
    try:
        assert (ctx.rank, ctx.world_size) == (rank, WORLD) and dist.is_initialized()
        per_rank = GLOBAL_BATCH // WORLD
        tr = Trainer(
            _config(per_rank, method),
            Path(out_dir) / f"rank{rank}",
            device=torch.device("cpu"),
            dist_ctx=ctx,
            iters_per_epoch=ITERS_PER_EPOCH,
        )
        sl = slice(rank * per_rank, (rank + 1) * per_rank)
        losses = []
        for batch in torch.load(batches_path):
            losses.append(_step(tr, batch, sl)["loss"])
        torch.save({"losses": losses, **_state(tr)}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _assert_close(a: dict, b: dict, what: str, atol: float) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=atol, msg=lambda m, k=k: f"{what}.{k}: {m}")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("method", ["mugs", "smog", "pwself", "univip"])
def test_two_gloo_ranks_match_one_process(tmp_path, method):
    cfg = _config(GLOBAL_BATCH, method)
    batches = [real_batch(cfg, GLOBAL_BATCH, seed=s) for s in range(N_STEPS)]
    if method == "univip":  # three samples without instances, all on rank 0: unequal valid counts
        for batch in batches:
            batch[2]["instances_valid"][:3] = False
    batches_path = tmp_path / "batches.pt"
    torch.save(batches, batches_path)

    # One process, full 16-image batches.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = Trainer(cfg, tmp_path / "single", device=torch.device("cpu"), iters_per_epoch=ITERS_PER_EPOCH)
        ref_losses = [_step(ref, batch)["loss"] for batch in batches]
        ref_state = _state(ref)
    finally:
        torch.set_num_threads(threads)
    init = Trainer(cfg, tmp_path / "init", device=torch.device("cpu"), iters_per_epoch=ITERS_PER_EPOCH)
    moved = max(
        (ref_state["teacher"][k] - v).abs().max().item() for k, v in init.teacher.state_dict().items()
    )
    assert moved > 5 * TEACHER_ATOL, f"the teacher moved only {moved:.2e}: the comparison would be vacuous"

    # Two processes, 8 images each.
    mp.spawn(_worker, args=(_free_port(), str(batches_path), str(tmp_path), method), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    # each rank reports the global batch's loss (the all-reduced mean), so both report the same
    assert ranks[0]["losses"] == ranks[1]["losses"], "every rank logs the global batch's loss"
    assert ranks[0]["losses"] == pytest.approx(ref_losses, rel=1e-4), (ranks[0]["losses"], ref_losses)
    # every rank ends with identical replicas (DDP keeps them in sync; EMA is local)
    for key in ("student", "teacher", *_extra_keys(method)):
        _assert_close(ranks[0][key], ranks[1][key], f"rank1 vs rank0 {key}", atol=1e-6)
    # ... equal to the single-process run
    _assert_close(ref_state["teacher"], ranks[0]["teacher"], "teacher", atol=TEACHER_ATOL)
    _assert_close(ref_state["student"], ranks[0]["student"], "student", atol=STUDENT_ATOL)
    # Mugs: queues, memories (written in rank order), the all-reduced centre; SMoG: groups, bank
    for key in _extra_keys(method):
        _assert_close(ref_state[key], ranks[0][key], key, atol=1e-5)
