"""InfoNCE against a queue of teacher targets (instance and local-group discrimination).

Mugs (Zhou et al., arXiv 2203.14415), instance discrimination supervision (and, on the
local-group features, local-group supervision): for student prediction s and teacher target t of
the same image and queue negatives {b_k},

    L = -log( exp(s.t / tau) / (exp(s.t / tau) + sum_k exp(s.b_k / tau)) ),   tau = 0.2,

averaged over crop pairs (see ``pairing``). After the loss the teacher targets of both global
crops are enqueued (gathered across ranks), as the official implementation does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mugs import diagnostics as diag
from mugs.distributed import concat_all_gather
from mugs.losses.pairing import pair_average
from mugs.memory import ring_write


class InfoNCEQueueLoss(nn.Module):
    def __init__(self, dim: int, queue_size: int, temperature: float = 0.2, n_global: int = 2) -> None:
        super().__init__()
        self.temperature, self.queue_size, self.n_global = temperature, queue_size, n_global
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def pair_loss(self, pred: torch.Tensor, target: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        pos = (pred * target).sum(-1, keepdim=True)
        neg = pred @ negatives
        logits = torch.cat([pos, neg], dim=1).float() / self.temperature
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, labels)

    def forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        n_student_crops: int,
        diagnostics: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``student``: [n_student_crops * B, d]; ``teacher``: [n_global * B, d] (targets, no grad).

        A ``diagnostics`` dict receives ``target_std``, ``target_cos`` and ``logit_gap``
        (:mod:`mugs.diagnostics`), against the queue before this step's targets are enqueued.
        """
        negatives = self.queue.clone().to(student.dtype)
        teacher = teacher.detach()
        loss = pair_average(
            student.chunk(n_student_crops),
            teacher.chunk(self.n_global),
            lambda p, t: self.pair_loss(p, t, negatives),
            self.n_global,
        )
        if diagnostics is not None:
            diagnostics.update(diag.target_diagnostics(teacher.chunk(self.n_global)))
            diagnostics["logit_gap"] = pair_average(
                student.detach().chunk(n_student_crops),
                teacher.chunk(self.n_global),
                lambda p, t: diag.logit_gap(p, t, self.queue, self.temperature),
                self.n_global,
            )
        for t in teacher.chunk(self.n_global):
            self.enqueue(t)
        return loss

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        keys = concat_all_gather(keys.float().contiguous())
        ring_write(self.queue.T, self.ptr, keys)  # the queue is [dim, K]: write through its transpose
