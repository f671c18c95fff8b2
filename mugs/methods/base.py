"""The method interface of the engine.

A method owns its student and teacher networks (each with a ``backbone``: the
:class:`mugs.models.backbone.ViTBackbone` that evaluation reads), its losses and its state
(queues, memories, groups). The engine (:class:`mugs.engine.Trainer`) owns everything else and is
the same for every method: data, schedules, the optimiser over the student's parameters, the EMA
of the teacher, DDP, checkpoints and resume, callbacks, evaluation and the online monitor.

One step, as the engine runs it::

    total, terms = method.loss_terms(student, crops, weak, epoch, diagnostics)  # autocast
    total.backward(); clip; optimiser step                                     # engine
    teacher <- m * teacher + (1 - m) * student over method.ema_pairs()          # engine
    method.after_step(step)                                                    # e.g. resets

``crops`` follow :attr:`Method.student_views`: with separate student views (Mugs) the loader
yields [teacher g1, g2, student g1, g2, locals...]; without (SMoG) [view 1, view 2, locals...],
every view seen by both networks.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from mugs.config import MugsConfig

if TYPE_CHECKING:
    from mugs.data.tensor_views import ViewExtras


class Method(nn.Module):
    """Base class: subclasses build ``self.student`` and ``self.teacher`` (teacher weights equal to
    the student's where their names match, no gradients) and implement :meth:`loss_terms`."""

    name: ClassVar[str]
    student_views: ClassVar[bool] = True  # the loader draws separate global crops for the student

    student: nn.Module
    teacher: nn.Module

    def __init__(self, cfg: MugsConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def _init_teacher(self) -> None:
        """Teacher = student where names match; no gradients through the teacher."""
        self.teacher.load_state_dict(self.student.state_dict(), strict=False)
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    # ---------------------------------------------------------------- the step
    def loss_terms(
        self,
        student: nn.Module,
        crops: list[torch.Tensor],
        weak: torch.Tensor,
        epoch: int,
        diagnostics: dict[str, torch.Tensor] | None,
        extras: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total loss and its named terms for one batch. ``student`` is ``self.student`` or
        its DDP wrapper (call it, not ``self.student``, for the gradient all-reduce). A
        ``diagnostics`` dict receives the collapse diagnostics ``diag/<branch>/<kind>``
        (:mod:`mugs.diagnostics`) without changing any numerics. ``extras``: what
        :meth:`view_extras` asked the views for (e.g. ``geometry``)."""
        raise NotImplementedError

    def view_extras(self) -> ViewExtras | None:
        """What the data pipeline must add to the crops (crop geometry, per-patch jitter); None:
        nothing."""
        return None

    def ema_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(student parameter, teacher parameter) pairs the engine averages after each step."""
        s_named = dict(self.student.named_parameters())
        return [(s_named[n], p) for n, p in self.teacher.named_parameters() if n in s_named]

    def after_step(self, step: int) -> None:
        """Called after the optimiser step and the EMA of step ``step`` (counted from 1)."""

    def logged_values(self, epoch: int) -> dict[str, float]:
        """Scalars logged with every step (schedules of the method, e.g. a teacher temperature)."""
        return {}

    # ------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict[str, Any]:
        """The method's state beyond the two networks, by checkpoint key."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` saved (``state`` is the whole checkpoint)."""

    # ------------------------------------------------------------------ setup
    def sync_batchnorm(self, distributed: bool, device: torch.device, is_main: bool) -> None:
        """BatchNorm in the heads under DDP uses the global batch's statistics (SyncBatchNorm,
        CUDA only); on CPU (gloo) each rank normalises its own batch."""
        if not distributed or not any(isinstance(m, nn.BatchNorm1d) for m in self.student.modules()):
            return
        if device.type == "cuda":
            self.student = nn.SyncBatchNorm.convert_sync_batchnorm(self.student)
            self.teacher = nn.SyncBatchNorm.convert_sync_batchnorm(self.teacher)
        elif is_main:
            warnings.warn("BatchNorm heads on CPU under DDP: statistics are per rank", stacklevel=2)
