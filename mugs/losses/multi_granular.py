"""Weighted combination of the three granularities.

Total = sum_i w_i L_i / sum_i w_i over instance, local-group and group losses. The official code
only switches terms on/off (it adds the unweighted losses and divides by the weight sum), so
with 0/1 weights both agree; here non-binary weights really weight.
"""

from __future__ import annotations

import torch
from torch import nn

from mugs.config import MugsConfig
from mugs.diagnostics import BRANCHES, diag_key
from mugs.losses.group import GroupLoss, teacher_temperature
from mugs.losses.infonce import InfoNCEQueueLoss
from mugs.models.network import MugsOutput


class MultiGranularLoss(nn.Module):
    def __init__(self, cfg: MugsConfig) -> None:
        super().__init__()
        m, mc = cfg.method, cfg.model
        self.cfg = cfg
        self.weights = [float(x) for x in m.loss_weights]
        self.instance = (
            InfoNCEQueueLoss(mc.instance_out_dim, m.instance_queue_size, m.instance_temp)
            if m.uses_instance
            else None
        )
        self.local_group = (
            InfoNCEQueueLoss(mc.local_group_out_dim, m.local_group_queue_size, m.local_group_temp)
            if m.uses_local_group
            else None
        )
        self.group = (
            GroupLoss(mc.group_out_dim, m.group_student_temp, m.center_momentum) if m.uses_group else None
        )

    def teacher_temp(self, epoch: int) -> float:
        m = self.cfg.method
        return teacher_temperature(
            epoch, m.group_warmup_teacher_temp, m.group_teacher_temp, m.group_warmup_teacher_temp_epochs
        )

    def forward(
        self,
        student: MugsOutput,
        teacher: MugsOutput,
        n_student_crops: int,
        epoch: int,
        diagnostics: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and per-branch terms; a ``diagnostics`` dict receives the collapse
        diagnostics of every enabled branch as ``diag/<branch>/<kind>`` (:mod:`mugs.diagnostics`)."""
        terms: dict[str, torch.Tensor] = {}
        per_branch: dict[str, dict[str, torch.Tensor]] = {n: {} for n in BRANCHES}

        def sink(name: str) -> dict[str, torch.Tensor] | None:
            return per_branch[name] if diagnostics is not None else None

        if self.instance is not None:
            terms["instance"] = self.instance(
                student.instance, teacher.instance, n_student_crops, sink("instance")
            )
        if self.local_group is not None:
            terms["local_group"] = self.local_group(
                student.local_group, teacher.local_group, n_student_crops, sink("local_group")
            )
        if self.group is not None:
            terms["group"] = self.group(
                student.group, teacher.group, n_student_crops, self.teacher_temp(epoch), sink("group")
            )
        if diagnostics is not None:
            for name, values in per_branch.items():
                diagnostics.update({diag_key(name, k): v for k, v in values.items()})
        wsum = sum(self.weights)
        total = sum(self.weights[BRANCHES.index(k)] * v for k, v in terms.items()) / wsum
        return total, terms
