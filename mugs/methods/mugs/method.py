"""Mugs on the method interface: the networks, memories and losses of :mod:`mugs.models` and
:mod:`mugs.losses`, in the step order of the official code (teacher, student, loss, then the
memories take this step's tokens)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mugs.config import MugsConfig
from mugs.losses.multi_granular import MultiGranularLoss
from mugs.memory import LocalGroupMemory
from mugs.methods.base import Method
from mugs.models.network import MugsNetwork


class MugsMethod(Method):
    name = "mugs"
    student_views = True

    def __init__(self, cfg: MugsConfig) -> None:
        super().__init__(cfg)
        self.student = MugsNetwork(cfg, student=True)
        self.teacher = MugsNetwork(cfg, student=False)
        self._init_teacher()
        d, m = self.student.backbone.embed_dim, cfg.method
        self.student_memory = LocalGroupMemory(d, m.memory_size, m.topk) if m.uses_local_group else None
        self.teacher_memory = LocalGroupMemory(d, m.memory_size, m.topk) if m.uses_local_group else None
        self.loss = MultiGranularLoss(cfg)

    def loss_terms(
        self,
        student: nn.Module,
        crops: list[torch.Tensor],
        weak: torch.Tensor,
        epoch: int,
        diagnostics: dict[str, torch.Tensor] | None,
        extras: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            t_out = self.teacher(crops[:2], self.teacher_memory, target=True)
        s_out = student(crops[2:], self.student_memory, target=False)
        total, terms = self.loss(s_out, t_out, len(crops) - 2, epoch, diagnostics)
        if self.student_memory is not None and self.teacher_memory is not None:
            self.student_memory.enqueue(s_out.memory_tokens.chunk(2)[0], keep=weak)
            self.teacher_memory.enqueue(t_out.memory_tokens.chunk(2)[0])
        return total, terms

    def logged_values(self, epoch: int) -> dict[str, float]:
        return {"teacher_temp": self.loss.teacher_temp(epoch)}

    def extra_state(self) -> dict[str, Any]:
        # the checkpoint layout of the trainer before methods were plug-ins: old checkpoints load
        return {
            "student_memory": self.student_memory.state_dict() if self.student_memory is not None else None,
            "teacher_memory": self.teacher_memory.state_dict() if self.teacher_memory is not None else None,
            "loss": self.loss.state_dict(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.student_memory is not None and self.teacher_memory is not None:
            self.student_memory.load_state_dict(state["student_memory"])
            self.teacher_memory.load_state_dict(state["teacher_memory"])
        self.loss.load_state_dict(state["loss"])
