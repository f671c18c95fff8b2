"""PW-Self's network: the ViT backbone and one DINO head applied to every output token (CLS and
patches), as in the authors' code (their head on ``x[:, :]``)."""

from __future__ import annotations

import torch
from torch import nn

from mugs.config import MugsConfig
from mugs.models.backbone import backbone_from_config
from mugs.models.heads import GroupHead


class TokenHeadNetwork(nn.Module):
    def __init__(self, cfg: MugsConfig, student: bool) -> None:
        super().__init__()
        m = cfg.method
        self.backbone = backbone_from_config(cfg, student=student)
        self.head = GroupHead(
            self.backbone.embed_dim, m.out_dim, m.head_hidden_dim, m.head_bottleneck_dim,
            norm_last_layer=m.norm_last_layer, use_bn=m.head_bn,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> head outputs of every token [B, N + 1, K] (CLS first). The head runs on
        the CLS tokens and on the patch tokens in two calls: one set of weights, but BatchNorm
        (``method.head_bn``) normalises each kind over its own statistics; one call over both
        let the 16x more numerous patches set them and the CLS outputs collapsed (demo probes)."""
        _, tokens = self.backbone(x)
        b, n, d = tokens.shape
        cls = self.head(tokens[:, 0])
        patches = self.head(tokens[:, 1:].reshape(b * (n - 1), d)).reshape(b, n - 1, -1)
        return torch.cat([cls.unsqueeze(1), patches], dim=1)
