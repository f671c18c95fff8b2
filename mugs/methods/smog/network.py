"""SMoG's encoders: backbone + projector (+ predictor on the online side).

Heads as the paper describes them (quoted in lightly's ``SMoGProjectionHead``): two-layer MLPs
whose hidden layer is followed by BatchNorm and an activation, the projector's output layer also
followed by BatchNorm. The backbone's feature is its post-norm CLS token.
"""

from __future__ import annotations

import torch
from torch import nn

from mugs.config import MugsConfig
from mugs.models.backbone import backbone_from_config
from mugs.models.mlp import byol_mlp


class SmogEncoder(nn.Module):
    """Online (``online=True``: with the predictor) or momentum encoder."""

    def __init__(self, cfg: MugsConfig, online: bool) -> None:
        super().__init__()
        m = cfg.method
        self.backbone = backbone_from_config(cfg, student=online)
        self.projector = byol_mlp(self.backbone.embed_dim, m.projector_hidden_dim, m.out_dim, True, m.head_bn)
        self.predictor = (
            byol_mlp(m.out_dim, m.predictor_hidden_dim, m.out_dim, False, m.head_bn) if online else None
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(projection, prediction or None) for a batch of images."""
        _, post = self.backbone(x)
        z = self.projector(post[:, 0])
        return z, (self.predictor(z) if self.predictor is not None else None)
