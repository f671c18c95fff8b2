"""Student / teacher network: backbone + the heads of the branches whose loss weight is > 0.

A zero loss weight removes its branch entirely: no head, no relation block, no memory, no
forward work.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn

from mugs.config import MugsConfig
from mugs.memory import LocalGroupMemory
from mugs.models.backbone import backbone_from_config
from mugs.models.heads import ContrastiveHead, GroupHead


@dataclass
class MugsOutput:
    instance: torch.Tensor | None  # [n_crops * B, out] (L2-normalised)
    local_group: torch.Tensor | None  # [n_crops * B, out]
    group: torch.Tensor | None  # [n_crops * B, prototypes] (logits)
    memory_tokens: torch.Tensor | None  # [n_global * B, D]: mean post-norm patch tokens, detached


class LocalGroupBranch(nn.Module):
    """One transformer block over [query, its top-k memory neighbours]; token 0, then the backbone's norm.

    Mugs (Zhou et al., 2022), local-group discrimination: the local-group feature aggregates an
    instance with its neighbours in a memory of features from previous batches.
    """

    def __init__(self, dim: int, num_heads: int, head: ContrastiveHead) -> None:
        super().__init__()
        self.block = Block(
            dim, num_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6)
        )
        self.head = head

    def features(self, query: torch.Tensor, memory: LocalGroupMemory, norm: nn.Module) -> torch.Tensor:
        nb = memory.neighbours(query).to(query.dtype)
        x = torch.cat([query.unsqueeze(1), nb], dim=1)
        return norm(self.block(x)[:, 0])


class MugsNetwork(nn.Module):
    def __init__(self, cfg: MugsConfig, student: bool) -> None:
        super().__init__()
        mc, m = cfg.model, cfg.method
        self.global_size = cfg.data.image_size
        self.backbone = backbone_from_config(cfg, student)
        d = self.backbone.embed_dim

        def contrastive(out_dim: int) -> ContrastiveHead:
            return ContrastiveHead(
                d,
                hidden_dim=mc.head_hidden_dim,
                out_dim=out_dim,
                predictor_hidden_dim=mc.predictor_hidden_dim,
                with_predictor=student,
                norm_before_pred=mc.norm_before_pred,
                use_bn=mc.use_bn_in_head,
            )

        self.instance_head = contrastive(mc.instance_out_dim) if m.uses_instance else None
        self.local_group = (
            LocalGroupBranch(d, self.backbone.num_heads, contrastive(mc.local_group_out_dim))
            if m.uses_local_group
            else None
        )
        self.group_head = (
            GroupHead(
                d,
                out_dim=mc.group_out_dim,
                hidden_dim=mc.head_hidden_dim,
                bottleneck_dim=mc.group_bottleneck_dim,
                norm_last_layer=mc.norm_last_layer,
                use_bn=mc.use_bn_in_head,
            )
            if m.uses_group
            else None
        )

    def forward(
        self, crops: list[torch.Tensor], memory: LocalGroupMemory | None = None, target: bool = False
    ) -> MugsOutput:
        """Run crops grouped by resolution; ``target`` gives teacher targets instead of student predictions."""
        cls_tokens, lg_feats, mem_tokens = [], [], []
        start = 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-1] == crops[start].shape[-1]:
                end += 1
            x = torch.cat(crops[start:end])
            pre, post = self.backbone(x)
            cls_tokens.append(post[:, 0])
            if self.local_group is not None:
                assert memory is not None, "the local-group branch needs its memory"
                lg_feats.append(self.local_group.features(pre.mean(1), memory, self.backbone.norm))
                if x.shape[-1] == self.global_size:
                    mem_tokens.append(post[:, 1:].mean(1).detach())
            start = end
        cls = torch.cat(cls_tokens)
        inst = self.instance_head(cls, target=target) if self.instance_head is not None else None
        lg = None
        if self.local_group is not None:
            lg = self.local_group.head(torch.cat(lg_feats), target=target)
        grp = self.group_head(cls) if self.group_head is not None else None
        return MugsOutput(inst, lg, grp, torch.cat(mem_tokens) if mem_tokens else None)
