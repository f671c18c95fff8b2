"""Optimiser construction and the official gradient manipulations."""

from __future__ import annotations

import torch
from torch import nn


def param_groups(model: nn.Module) -> list[dict]:
    """Four groups as official: weight-decayed / not (biases, norms, 1-d), patch-embed or not."""
    groups: dict[str, list[nn.Parameter]] = {
        "normal": [],
        "patch_embed": [],
        "no_wd": [],
        "patch_embed_no_wd": [],
    }
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = name.endswith(".bias") or p.ndim == 1
        pe = "patch_embed" in name
        groups[
            ("patch_embed" if pe else "normal") if not no_wd else ("patch_embed_no_wd" if pe else "no_wd")
        ].append(p)
    return [
        {"name": "normal", "params": groups["normal"], "apply_wd": True},
        {"name": "patch_embed", "params": groups["patch_embed"], "apply_wd": True},
        {"name": "no_wd", "params": groups["no_wd"], "apply_wd": False, "weight_decay": 0.0},
        {
            "name": "patch_embed_no_wd",
            "params": groups["patch_embed_no_wd"],
            "apply_wd": False,
            "weight_decay": 0.0,
        },
    ]


def build_optimizer(model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    groups = [g for g in param_groups(model) if g["params"]]
    kwargs = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=0.0, **kwargs)


def set_schedule(opt: torch.optim.Optimizer, lr: float, wd: float, patch_embed_lr_mult: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr * (patch_embed_lr_mult if "patch_embed" in g["name"] else 1.0)
        if g.get("apply_wd", True):
            g["weight_decay"] = wd


@torch.no_grad()
def clip_gradients_per_tensor(model: nn.Module, clip: float) -> None:
    """Scale each parameter's gradient to norm <= ``clip`` (per tensor, not global), as official."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    norms = torch.stack(torch._foreach_norm(grads))
    coefs = (clip / (norms + 1e-6)).clamp_(max=1.0)  # elementwise: the same numbers as tensor by tensor
    torch._foreach_mul_(grads, list(coefs.unbind(0)))


def cancel_last_layer_grad(model: nn.Module, epoch: int, freeze_epochs: int) -> None:
    """Drop the group head's last-layer gradient during the first ``freeze_epochs`` epochs."""
    if epoch >= freeze_epochs:
        return
    for n, p in model.named_parameters():
        if "last_layer" in n:
            p.grad = None
