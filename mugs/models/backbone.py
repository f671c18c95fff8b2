"""timm Vision Transformer backbones (patch 16 at 224 px, patch 4 for 32-px images).

The backbone returns both pre-norm and post-norm tokens: Mugs' local-group branch queries its
memory with the mean of all pre-norm tokens and stores the mean of the post-norm patch tokens.

Crops of another size than the stored grid (96-px local crops against a 224-px position
embedding) get a resampled position embedding. ``pos_embed_interp="dino"`` (default) resamples as
Mugs and DINO do: bicubic by the scale factor ``(new + 0.1) / old`` per axis, no antialiasing;
``"timm"`` keeps timm's own resampling (bicubic to the target size, antialiased).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from mugs.config import POS_EMBED_INTERP, MugsConfig

# (embed_dim, depth, num_heads) as in the official vision_transformer.py (qkv_bias=True, LN eps 1e-6)
ARCH_DIMS: dict[str, tuple[int, int, int]] = {
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
}


def interpolate_pos_embed_dino(
    pos_embed: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int], num_prefix: int = 1
) -> torch.Tensor:
    """Resample a [1, prefix + H0*W0, D] position embedding to the grid ``new_grid`` (rows, cols).

    The patch part is resized bicubically by the scale factors ``(new + 0.1) / old`` (the 0.1
    keeps floor(old * factor) at ``new`` despite rounding; the factor, not the target size, sets
    the sampling positions), without antialiasing; the prefix (class) part is kept. The stored
    grid returns ``pos_embed`` itself.
    """
    new_h, new_w = new_grid
    old_h, old_w = old_grid
    if (new_h, new_w) == (old_h, old_w):
        return pos_embed
    prefix, patch = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    dim = patch.shape[-1]
    grid = patch.reshape(1, old_h, old_w, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid.float(),
        scale_factor=((new_h + 0.1) / old_h, (new_w + 0.1) / old_w),
        mode="bicubic",
        align_corners=False,
    ).to(patch.dtype)
    if grid.shape[-2:] != (new_h, new_w):
        raise RuntimeError(f"position embedding resampled to {tuple(grid.shape[-2:])}, expected {new_grid}")
    patch = grid.permute(0, 2, 3, 1).reshape(1, new_h * new_w, dim)
    return torch.cat([prefix, patch], dim=1)


class ViTBackbone(nn.Module):
    """A timm ViT without classifier, with dynamic image size for multi-crop inputs."""

    def __init__(
        self,
        arch: str,
        img_size: int,
        patch_size: int,
        drop_path_rate: float = 0.0,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        pos_embed_interp: str = "dino",
    ) -> None:
        super().__init__()
        if pos_embed_interp not in POS_EMBED_INTERP:
            raise ValueError(
                f"pos_embed_interp: one of {', '.join(POS_EMBED_INTERP)}; got {pos_embed_interp!r}"
            )
        self.pos_embed_interp = pos_embed_interp
        d, n, h = ARCH_DIMS[arch]
        self.vit = VisionTransformer(
            img_size=img_size,
            patch_size=patch_size,
            num_classes=0,
            global_pool="token",
            embed_dim=embed_dim or d,
            depth=depth or n,
            num_heads=num_heads or h,
            mlp_ratio=4.0,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            drop_path_rate=drop_path_rate,
            dynamic_img_size=True,
        )
        self.embed_dim = self.vit.embed_dim
        self.depth = len(self.vit.blocks)
        self.num_heads = num_heads or h

    @property
    def norm(self) -> nn.Module:
        return self.vit.norm

    def _pos_embed_dino(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, W, D] patch embeddings -> [B, 1 + H*W, D] with class token and DINO-resampled positions."""
        v = self.vit
        b, h, w, d = x.shape
        x = torch.cat([v.cls_token.expand(b, -1, -1), x.reshape(b, h * w, d)], dim=1)
        pos = interpolate_pos_embed_dino(
            v.pos_embed, (h, w), tuple(v.patch_embed.grid_size), v.num_prefix_tokens
        )
        return v.pos_drop(x + pos)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] -> input tokens of the first block, [B, 1 + patches, D]."""
        v = self.vit
        x = v.patch_embed(x)
        x = self._pos_embed_dino(x) if self.pos_embed_interp == "dino" else v._pos_embed(x)
        return v.norm_pre(v.patch_drop(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (pre-norm tokens, post-norm tokens), each [B, 1 + patches, D]."""
        v = self.vit
        x = v.blocks(self.embed(x))
        return x, v.norm(x)

    def last_blocks(self, x: torch.Tensor, n: int) -> list[torch.Tensor]:
        """Post-norm outputs of the last ``n`` blocks (linear-probe features)."""
        v = self.vit
        x = self.embed(x)
        outs = []
        for i, blk in enumerate(v.blocks):
            x = blk(x)
            if i >= len(v.blocks) - n:
                outs.append(v.norm(x))
        return outs

    def cls(self, x: torch.Tensor) -> torch.Tensor:
        """Post-norm CLS token (the feature kNN evaluation uses)."""
        return self(x)[1][:, 0]


def backbone_from_config(cfg: MugsConfig, student: bool) -> ViTBackbone:
    """The backbone of ``cfg`` (every method's): drop path on the student side only."""
    mc = cfg.model
    return ViTBackbone(
        mc.arch,
        img_size=cfg.data.image_size,
        patch_size=mc.patch_size,
        drop_path_rate=mc.drop_path_rate if student else 0.0,
        embed_dim=mc.embed_dim,
        depth=mc.depth,
        num_heads=mc.num_heads,
        pos_embed_interp=mc.pos_embed_interp,
    )
