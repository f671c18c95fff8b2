"""UniVIP's encoders: backbone + BYOL projector (+ predictor and the instance aggregator on the
online side). The scene feature is the backbone's post-norm CLS token; an instance's is the RoI
pool of the post-norm patch tokens inside its box (:func:`.instances.pool_boxes`). Scenes and
instances go through the same projector (and predictor) in separate calls, so BatchNorm
normalises each kind over its own statistics."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mugs.config import MugsConfig
from mugs.methods.univip.instances import pool_boxes
from mugs.models.backbone import backbone_from_config
from mugs.models.mlp import byol_mlp


@dataclass
class UnivipOutputs:
    """One encoder pass over a batch of views (the two scene views concatenated: [2B, ...])."""

    scene: torch.Tensor  # [N, D] projection (target) or prediction (online)
    instances: torch.Tensor  # [N, K, D] likewise, one per box
    aggregated: torch.Tensor | None  # [N, D] online only: W [o_1; ...; o_K]


class UnivipEncoder(nn.Module):
    """Online (``online=True``: predictor and aggregator) or momentum encoder."""

    def __init__(self, cfg: MugsConfig, online: bool) -> None:
        super().__init__()
        m = cfg.method
        self.backbone = backbone_from_config(cfg, student=online)
        self.projector = byol_mlp(self.backbone.embed_dim, m.projector_hidden_dim, m.out_dim, bn=m.head_bn)
        self.predictor = byol_mlp(m.out_dim, m.predictor_hidden_dim, m.out_dim, bn=m.head_bn) if online else None
        self.aggregator = nn.Linear(m.n_instances * m.out_dim, m.out_dim) if online else None

    def _head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.projector(x)
        return z, (self.predictor(z) if self.predictor is not None else z)

    def forward(self, x: torch.Tensor, geometry: torch.Tensor, boxes: torch.Tensor) -> UnivipOutputs:
        """Views [N, 3, H, W], their geometry rows [N, 5] and the boxes [N, K, 4] (source px)."""
        _, tokens = self.backbone(x)
        _, scene = self._head(tokens[:, 0])
        pooled = pool_boxes(tokens[:, 1:], geometry, boxes)  # [N, K, D_backbone]
        n, k, d = pooled.shape
        _, inst = self._head(pooled.reshape(n * k, d))
        inst = inst.reshape(n, k, -1)
        agg = self.aggregator(inst.flatten(1)) if self.aggregator is not None else None
        return UnivipOutputs(scene=scene, instances=inst, aggregated=agg)
