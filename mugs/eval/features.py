"""Load a pretrained teacher from a checkpoint and extract frozen features."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from mugs import checkpoint as ckpt
from mugs.config import MugsConfig, config_from_checkpoint
from mugs.models.backbone import ViTBackbone, backbone_from_config


def load_teacher_backbone(path: str | Path, device: torch.device) -> tuple[ViTBackbone, MugsConfig, int]:
    """(teacher backbone in eval mode, its config, the checkpoint's step)."""
    state = ckpt.load(path)
    cfg = config_from_checkpoint(state["config"])
    backbone = backbone_from_config(cfg, student=False)
    prefix = "backbone."  # every method's teacher holds its backbone under this name
    backbone.load_state_dict({k[len(prefix) :]: v for k, v in state["teacher"].items() if k.startswith(prefix)})
    return backbone.to(device).eval(), cfg, int(state["step"])


@torch.no_grad()
def extract(
    backbone: ViTBackbone,
    ds: Dataset,
    device: torch.device,
    batch_size: int = 256,
    num_workers: int = 0,
    n_last_blocks: int = 1,
    avgpool: bool = False,
    kind: str = "knn",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of a dataset. ``kind="knn"``: L2-normalised post-norm CLS;
    ``kind="linear"``: CLS of the last ``n_last_blocks`` blocks (+ mean patch tokens if ``avgpool``)."""
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    feats, labels = [], []
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        with amp:
            if kind == "knn":
                f = F.normalize(backbone.cls(x).float(), dim=-1)
            else:
                outs = backbone.last_blocks(x, n_last_blocks)
                parts = [o[:, 0] for o in outs]
                if avgpool:
                    parts.append(outs[-1][:, 1:].mean(1))
                f = torch.cat(parts, dim=-1).float()
        feats.append(f.cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(feats), torch.cat(labels)
