"""PW-Self's loss: DINO's self-distillation on the image (CLS) token and on matched patches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mugs.distributed import all_reduce_mean
from mugs.methods.pwself.matching import PatchPairs


def cross_entropy(teacher_probs: torch.Tensor, student_logits: torch.Tensor, temp: float) -> torch.Tensor:
    """-sum_k p_t,k log softmax(s / tau_s)_k over the last dimension."""
    return -(teacher_probs * F.log_softmax(student_logits.float() / temp, dim=-1)).sum(-1)


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` [B, M] of ``x`` [B, N, K] -> [B, M, K]."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class PatchWiseLoss(nn.Module):
    """Javidani et al., "Patch-Wise Self-Supervised Visual Representation Learning" (arXiv
    2310.18651). One head on every token; the teacher's tokens of each global view t are centred
    per position (c_n, one centre for each token position of a global view, CLS at n = 0) and
    sharpened; for every other view s of the student and its matched patches (i, j) in
    :class:`PatchPairs` (teacher patch i, student patch j):

        p_t,n   = softmax((T_t,n - c_n) / tau_t)
        L_image = mean over (t, s) pairs and the batch of  H(p_t,0, S_s,0)
        L_patch = mean over (t, s) pairs and the batch of  mean over the image's matched (i, j)
                  of  H(p_t,i, S_s,j)   (an image whose two views share no patch adds 0)
        L       = w_image L_image + w_patch L_patch,  H(p, S) = -sum_k p_k log softmax(S / tau_s)_k

    and c_n <- m c_n + (1 - m) mean over the global batch and both global views of T_n. Tokens
    are the ViT's: CLS at 0, patch k at k + 1. Every image weighs the same in both terms, so the
    mean of the ranks' losses is the loss of the global batch (DDP equals one process); the
    authors pool the CLS and the matched patches of a pair in one mean instead.
    """

    def __init__(
        self, out_dim: int, n_positions: int, student_temp: float, center_momentum: float,
        image_weight: float, patch_weight: float,
    ) -> None:
        super().__init__()
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.image_weight, self.patch_weight = image_weight, patch_weight
        self.register_buffer("center", torch.zeros(n_positions, out_dim))

    def forward(
        self,
        teacher: Sequence[torch.Tensor],
        student: Sequence[torch.Tensor],
        pairs: Mapping[tuple[int, int], PatchPairs],
        teacher_temp: float,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``teacher``: the global views' token outputs [B, N + 1, K]; ``student``: every view's;
        ``pairs[(t, s)]``: teacher view t's patches matched with student view s's."""
        probs = [F.softmax((t.float().detach() - self.center) / teacher_temp, dim=-1) for t in teacher]
        image, patch = [], []
        for (t, s), pp in pairs.items():
            image.append(cross_entropy(probs[t][:, 0], student[s][:, 0], self.student_temp).mean())
            if pp.a.shape[1]:
                ce = cross_entropy(_gather(probs[t], pp.a + 1), _gather(student[s], pp.b + 1), self.student_temp)
                per_image = (ce * pp.valid).sum(1) / pp.valid.sum(1).clamp_min(1)
                patch.append(per_image.mean())
            else:
                patch.append(student[s].new_zeros((), dtype=torch.float32))
        l_image, l_patch = torch.stack(image).mean(), torch.stack(patch).mean()
        self.update_center(teacher)
        total = self.image_weight * l_image + self.patch_weight * l_patch
        return total, {"pw_image": l_image.detach(), "pw_patch": l_patch.detach()}

    @torch.no_grad()
    def update_center(self, teacher: Sequence[torch.Tensor]) -> None:
        batch = all_reduce_mean(torch.stack([t.float().mean(0) for t in teacher]).mean(0))
        self.center.mul_(self.center_momentum).add_(batch * (1 - self.center_momentum))
