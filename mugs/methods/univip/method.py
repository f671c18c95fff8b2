"""UniVIP on the method interface (Li et al., CVPR 2022, arXiv 2203.06965).

One step on two scene views x1, x2 of each image (drawn so that they overlap) and K instance boxes
inside their overlap (:mod:`.instances`; ``extras["instances"]``, with the views' geometry):

1. both views through the online encoder (scene predictions q_v, instance predictions o_v, their
   aggregate a_v) and the momentum encoder (scene projections z'_v, instance projections t_v);
   an instance's feature in a view is pooled from that view's own patch tokens;
2. ``L = w_ss L_ss + w_si L_si + w_ii L_ii`` (:mod:`.loss`): BYOL between the scenes, each view's
   aggregated instances against the other view's scene, and the instances of the two views
   matched by optimal transport;
3. the engine's EMA moves the momentum encoder (``train.momentum_teacher`` -> 1, cosine).

Samples whose views never overlapped (``extras["instances_valid"]`` false) take part in L_ss
only.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from mugs.config import MugsConfig
from mugs.data.tensor_views import ViewExtras
from mugs.diagnostics import UNIVIP_INSTANCE_BRANCH, UNIVIP_SCENE_BRANCH, diag_key, target_diagnostics
from mugs.methods.base import Method
from mugs.methods.univip.loss import InstanceInstanceLoss, SceneInstanceLoss, SceneSceneLoss
from mugs.methods.univip.network import UnivipEncoder
from mugs.methods.univip.proposals import load_proposals

TERMS = ("univip_ss", "univip_si", "univip_ii")  # loss/<term>


class UnivipMethod(Method):
    name = "univip"
    student_views = False  # both scene views go through both encoders

    def __init__(self, cfg: MugsConfig) -> None:
        super().__init__(cfg)
        m = cfg.method
        self.student = UnivipEncoder(cfg, online=True)
        self.teacher = UnivipEncoder(cfg, online=False)
        self._init_teacher()
        self.scene_scene = SceneSceneLoss()
        self.scene_instance = SceneInstanceLoss()
        self.instance_instance = InstanceInstanceLoss(m.sinkhorn_eps, m.sinkhorn_iters)

    def view_extras(self) -> ViewExtras:
        m = self.cfg.method
        proposals = load_proposals(m.proposals) if m.proposals is not None else None
        return ViewExtras(
            geometry=True, instances=m.n_instances, instance_scale=tuple(m.instance_scale), proposals=proposals
        )

    def loss_terms(
        self,
        student: nn.Module,
        crops: list[torch.Tensor],
        weak: torch.Tensor,
        epoch: int,
        diagnostics: dict[str, torch.Tensor] | None,
        extras: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if extras is None or "instances" not in extras:
            raise ValueError("UniVIP needs its instance boxes and the views' geometry (extras) with its crops")
        views = torch.cat(crops[:2])
        geometry = torch.cat([extras["geometry"][:, 0], extras["geometry"][:, 1]])
        boxes = extras["instances"].repeat(2, 1, 1)
        valid = extras.get("instances_valid")
        with torch.no_grad():
            tgt = self.teacher(views, geometry, boxes)
            if diagnostics is not None:
                self._diagnose(tgt.scene.chunk(2), tgt.instances.chunk(2), diagnostics)
        on = student(views, geometry, boxes)
        z, q = tgt.scene.float().chunk(2), on.scene.chunk(2)
        terms = {
            "univip_ss": self.scene_scene((q[0], q[1]), (z[0], z[1])),
            "univip_si": self.scene_instance(tuple(on.aggregated.chunk(2)), (z[0], z[1]), valid),
            "univip_ii": self.instance_instance(
                tuple(on.instances.chunk(2)), tuple(tgt.instances.chunk(2)), (z[0], z[1]), (q[0], q[1]), valid
            ),
        }
        m = self.cfg.method
        weights = (m.scene_weight, m.scene_instance_weight, m.instance_weight)
        total = sum(w * terms[k] for w, k in zip(weights, TERMS, strict=True))
        return total, {k: v.detach() for k, v in terms.items()}

    def _diagnose(self, scenes: tuple[torch.Tensor, ...], instances: tuple[torch.Tensor, ...], out: dict[str, torch.Tensor]) -> None:
        """Std and cosine of the momentum branch's scene projections and of its instance
        projections (all boxes of a view together), per view."""
        out.update({diag_key(UNIVIP_SCENE_BRANCH, k): v for k, v in target_diagnostics(scenes).items()})
        flat = [i.flatten(0, 1) for i in instances]
        out.update({diag_key(UNIVIP_INSTANCE_BRANCH, k): v for k, v in target_diagnostics(flat).items()})
