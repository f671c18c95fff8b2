"""PW-Self on the method interface (Javidani et al., arXiv 2310.18651).

One step: every view (the two global views first, then the local crops; each image's views drawn
with their boxes and flips, every patch colour-jittered on its own) goes through the student, the
two global views through the EMA teacher; one DINO head on every token of both. For each global
view t of the teacher and every other view s of the student, the patches covering the same part
of the image are matched from the two crops' geometry (:mod:`.matching`), and the loss
(:class:`.loss.PatchWiseLoss`) pulls together the CLS tokens and the matched patch tokens.
Global-global and global-local pairs, no local-local ones (the teacher sees the globals only),
as in the authors' code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mugs.config import MugsConfig
from mugs.data.patch_jitter import PatchJitter
from mugs.data.tensor_views import ViewExtras
from mugs.diagnostics import PWSELF_IMAGE_BRANCH, PWSELF_PATCH_BRANCH, diag_key, group_diagnostics
from mugs.losses.group import teacher_temperature
from mugs.methods.base import Method
from mugs.methods.pwself.loss import PatchWiseLoss
from mugs.methods.pwself.matching import PatchPairs, match_patches
from mugs.methods.pwself.network import TokenHeadNetwork

N_GLOBAL = 2


class PwSelfMethod(Method):
    name = "pwself"
    student_views = False  # the teacher's two global views are the student's too

    def __init__(self, cfg: MugsConfig) -> None:
        super().__init__(cfg)
        m, p = cfg.method, cfg.model.patch_size
        self.student = TokenHeadNetwork(cfg, student=True)
        self.teacher = TokenHeadNetwork(cfg, student=False)
        self._init_teacher()
        self.grids = [cfg.data.image_size // p] * N_GLOBAL + [cfg.data.local_crop_size // p] * cfg.data.local_crops_number
        self.loss = PatchWiseLoss(
            m.out_dim, self.grids[0] ** 2 + 1, m.student_temp, m.center_momentum, m.image_weight, m.patch_weight
        )

    def view_extras(self) -> ViewExtras:
        m = self.cfg.method
        jitter = PatchJitter(
            m.patch_brightness, m.patch_contrast, m.patch_saturation, m.patch_hue, m.patch_jitter_p, m.patch_gray_p
        )
        return ViewExtras(geometry=True, patch_size=self.cfg.model.patch_size, patch_jitter=jitter if m.patch_jitter else None)

    def teacher_temp(self, epoch: int) -> float:
        m = self.cfg.method
        return teacher_temperature(epoch, m.warmup_teacher_temp, m.teacher_temp, m.warmup_teacher_temp_epochs)

    def pairs(self, geometry: torch.Tensor) -> dict[tuple[int, int], PatchPairs]:
        """Teacher global view t's patches matched with student view s's, for every t != s."""
        out = {}
        for t in range(N_GLOBAL):
            for s, grid in enumerate(self.grids):
                if s != t:
                    out[(t, s)] = match_patches(geometry[:, t], self.grids[t], geometry[:, s], grid)
        return out

    def loss_terms(
        self,
        student: nn.Module,
        crops: list[torch.Tensor],
        weak: torch.Tensor,
        epoch: int,
        diagnostics: dict[str, torch.Tensor] | None,
        extras: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if extras is None or "geometry" not in extras:
            raise ValueError("PW-Self needs the views' geometry (extras['geometry']) with its crops")
        temp = self.teacher_temp(epoch)
        with torch.no_grad():
            teacher = list(self.teacher(torch.cat(crops[:N_GLOBAL])).chunk(N_GLOBAL))
            if diagnostics is not None:
                self._diagnose(teacher, temp, diagnostics)
        student_out = list(student(torch.cat(crops[:N_GLOBAL])).chunk(N_GLOBAL))
        if len(crops) > N_GLOBAL:
            student_out += list(student(torch.cat(crops[N_GLOBAL:])).chunk(len(crops) - N_GLOBAL))
        return self.loss(teacher, student_out, self.pairs(extras["geometry"]), temp)

    def _diagnose(self, teacher: list[torch.Tensor], temp: float, out: dict[str, torch.Tensor]) -> None:
        """The GDS diagnostics on the teacher's CLS outputs and on its patch outputs (each with
        its position's centre), so a collapse of either level is flagged."""
        c = self.loss.center
        image = group_diagnostics([t[:, 0] for t in teacher], c[0], temp)
        patch = group_diagnostics([(t[:, 1:] - c[1:]).flatten(0, 1) for t in teacher], torch.zeros_like(c[0]), temp)
        out.update({diag_key(PWSELF_IMAGE_BRANCH, k): v for k, v in image.items()})
        out.update({diag_key(PWSELF_PATCH_BRANCH, k): v for k, v in patch.items()})

    def logged_values(self, epoch: int) -> dict[str, float]:
        return {"teacher_temp": self.teacher_temp(epoch)}

    def extra_state(self) -> dict[str, Any]:
        return {"pwself_center": self.loss.center.clone()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.loss.center.copy_(state["pwself_center"])
