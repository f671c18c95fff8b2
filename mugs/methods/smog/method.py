"""SMoG on the method interface (Pang et al., ECCV 2022, arXiv 2207.06167).

One step on two views x1, x2 of each image, every view through both encoders:

1. momentum projections z'_v = proj_m(enc_m(x_v)) and online predictions p_v =
   pred(proj(enc(x_v))), v = 1, 2;
2. assignments a_v = nearest group of z'_v, with the groups as they were before this step;
3. the groups move synchronously: g_k <- normalise(beta g_k + (1 - beta) mean of the z' assigned
   to k), over both views and all ranks (all-gathered, so every rank holds the same groups);
4. loss (:class:`GroupContrastLoss`): cross-entropy of p_1's similarities to the moved groups
   against a_2, and of p_2 against a_1 (views swapped), averaged;
5. the z' enter the feature bank; the engine's EMA moves the momentum encoder; every
   ``reset_every`` steps the groups are re-initialised by k-means over the bank and the
   momentum encoder is re-synchronised with the online one (:meth:`SmogMethod.after_step`).

Differences from lightly's unofficial implementation (which we read, not copied): lightly
updates the groups with the online projections (gradients flowing through the update), banks
online projections, and alternates the two views between steps instead of symmetrising; here
the groups and the bank take the momentum projections (no gradient), as the assignment does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mugs.config import MugsConfig
from mugs.diagnostics import SMOG_BRANCH, assignment_entropies, diag_key, target_diagnostics
from mugs.distributed import concat_all_gather
from mugs.methods.base import Method
from mugs.methods.smog.groups import GroupFeatures, assign
from mugs.methods.smog.loss import GroupContrastLoss
from mugs.methods.smog.network import SmogEncoder

BRANCH = SMOG_BRANCH  # diagnostics and loss term name: diag/smog/<kind>, loss/smog


class SmogMethod(Method):
    name = "smog"
    student_views = False

    def __init__(self, cfg: MugsConfig) -> None:
        super().__init__(cfg)
        m = cfg.method
        self.student = SmogEncoder(cfg, online=True)
        self.teacher = SmogEncoder(cfg, online=False)
        self._init_teacher()
        gen = torch.Generator().manual_seed(cfg.seed)
        self.groups = GroupFeatures(m.n_groups, m.out_dim, m.bank_size, gen)
        self.loss = GroupContrastLoss(m.temperature)

    def loss_terms(
        self,
        student: nn.Module,
        crops: list[torch.Tensor],
        weak: torch.Tensor,
        epoch: int,
        diagnostics: dict[str, torch.Tensor] | None,
        extras: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        m = self.cfg.method
        views = torch.cat(crops[:2])
        with torch.no_grad():
            z_m, _ = self.teacher(views)
            z_m = z_m.float()
            a = assign(z_m, self.groups.groups)
            if diagnostics is not None:
                self._diagnose(z_m.chunk(2), diagnostics)
            # all ranks' features, view by view: the order (and so the bank) of one process
            z_all = torch.cat([concat_all_gather(c) for c in z_m.chunk(2)])
            a_all = torch.cat([concat_all_gather(c) for c in a.chunk(2)])
            self.groups.update(z_all, a_all, m.group_momentum)
            self.groups.enqueue(z_all)
        _, pred = student(views)
        p1, p2 = pred.chunk(2)
        a1, a2 = a.chunk(2)
        loss = self.loss((p1, p2), (a1, a2), self.groups.groups)
        return loss, {BRANCH: loss.detach()}

    def _diagnose(self, chunks: tuple[torch.Tensor, ...], out: dict[str, torch.Tensor]) -> None:
        """Momentum projections (std, cosine) and the entropies of their soft assignment
        softmax(z' . g / tau) to the groups of this step (before the update)."""
        stats = target_diagnostics(chunks)
        g = torch.nn.functional.normalize(self.groups.groups, dim=-1)
        sims = [torch.nn.functional.normalize(c, dim=-1) @ g.T for c in chunks]
        zero = torch.zeros((), device=g.device)
        ent = torch.stack([assignment_entropies(s, zero, self.cfg.method.temperature) for s in sims]).mean(0)
        stats.update({"batch_entropy": ent[0], "sample_entropy": ent[1]})
        out.update({diag_key(BRANCH, k): v for k, v in stats.items()})

    def after_step(self, step: int) -> None:
        every = self.cfg.method.reset_every
        if not every or step % every:
            return
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)  # same on every rank
        if self.groups.reset(self.cfg.method.kmeans_iters, gen):
            # the momentum encoder restarts from the online one (predictor excluded: not in it)
            self.teacher.load_state_dict(self.student.state_dict(), strict=False)

    def extra_state(self) -> dict[str, Any]:
        return {"smog_groups": self.groups.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.groups.load_state_dict(state["smog_groups"])
