"""Group discrimination (GDS): DINO-style cross-entropy to centred, sharpened teacher prototypes.

Mugs (Zhou et al., arXiv 2203.14415), group discrimination supervision: with prototype logits
g_s (student) and g_t (teacher), centre c and temperatures tau_s = 0.1, tau_t(epoch),

    L = - sum_j softmax((g_t - c) / tau_t)_j * log softmax(g_s / tau_s)_j,

averaged over crop pairs (see ``pairing``); c <- m c + (1 - m) mean(g_t), m = 0.9, the mean
taken over the global batch. tau_t warms up linearly from its start value over the warm-up epochs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mugs import diagnostics as diag
from mugs.distributed import all_reduce_mean
from mugs.losses.pairing import pair_average


def teacher_temperature(epoch: int, start: float, end: float, warmup_epochs: int) -> float:
    """Linear warm-up over ``warmup_epochs`` (as np.linspace(start, end, warmup_epochs)), then ``end``."""
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return end
    if warmup_epochs == 1:
        return start
    return start + (end - start) * epoch / (warmup_epochs - 1)


class GroupLoss(nn.Module):
    def __init__(
        self,
        out_dim: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        n_global: int = 2,
    ) -> None:
        super().__init__()
        self.student_temp, self.center_momentum, self.n_global = student_temp, center_momentum, n_global
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        n_student_crops: int,
        teacher_temp: float,
        diagnostics: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """A ``diagnostics`` dict receives the GDS keys of :func:`mugs.diagnostics.group_diagnostics`
        (with the centre this step's targets used, before its update)."""
        if diagnostics is not None:
            diagnostics.update(
                diag.group_diagnostics(teacher.chunk(self.n_global), self.center, teacher_temp)
            )
        s = (student.float() / self.student_temp).chunk(n_student_crops)
        t = F.softmax((teacher.float().detach() - self.center) / teacher_temp, dim=-1).chunk(self.n_global)

        def ce(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
            return torch.sum(-tgt * F.log_softmax(pred, dim=-1), dim=-1).mean()

        loss = pair_average(s, t, ce, self.n_global)
        self.update_center(teacher.detach())
        return loss

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        batch_center = all_reduce_mean(teacher.float().mean(dim=0, keepdim=True))
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))
