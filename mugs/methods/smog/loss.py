"""SMoG's group-level contrastive loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GroupContrastLoss(nn.Module):
    """Cross-entropy between an online prediction's similarities to the groups and the group the
    other view's momentum feature was assigned to (Pang et al., ECCV 2022, arXiv 2207.06167; the
    group-level contrast replacing the instance-level InfoNCE):

        L(p, a) = -log( exp(p . g_a / tau) / sum_k exp(p . g_k / tau) ),   p, g_k unit vectors,

    averaged over the batch and symmetrised over the two views:
    ``(L(p_1, a_2) + L(p_2, a_1)) / 2``. The groups carry no gradient (they move by momentum).
    """

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def logits(self, pred: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        return (
            F.normalize(pred, dim=-1)
            @ F.normalize(groups.detach(), dim=-1).T.to(pred.dtype)
            / self.temperature
        )

    def forward(
        self,
        preds: tuple[torch.Tensor, torch.Tensor],
        assigned: tuple[torch.Tensor, torch.Tensor],
        groups: torch.Tensor,
    ) -> torch.Tensor:
        """``preds`` (view 1, view 2) [B, D]; ``assigned`` the two views' group indices [B]."""
        l12 = F.cross_entropy(self.logits(preds[0], groups).float(), assigned[1])
        l21 = F.cross_entropy(self.logits(preds[1], groups).float(), assigned[0])
        return (l12 + l21) / 2
