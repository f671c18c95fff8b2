"""UniVIP's three losses (Li et al., CVPR 2022, arXiv 2203.06965), each symmetric over the two
scene views and summed over both directions, as BYOL sums its two (Grill et al., arXiv 2006.07733,
eq. 2 and the symmetrised total). With ``l(p, z) = 2 - 2 p.z / (|p| |z|)`` (BYOL's normalised
squared error) and the momentum (target) branch carrying no gradient:

- scene-scene: ``L_ss = l(q_1, z'_2) + l(q_2, z'_1)``, q the online predictions of the scene views,
  z' the target projections;
- scene-instance: ``L_si = l(a_1, z'_2) + l(a_2, z'_1)``, a_v = W [o_v1; ...; o_vK] the K online
  instance predictions of view v concatenated and mapped to one vector by a linear layer W (the
  aggregation of the unofficial implementation utkutpcgl/UniVIP at 0d09c74);
- instance-instance: ``L_ii = sum_ij T*_ij C_ij`` over view v's online instance predictions o_i
  and the other view's target instance projections t_j, with ``C_ij = 1 - cos(o_i, t_j)`` and
  ``T*`` the entropic optimal transport plan (:func:`.sinkhorn.sinkhorn`, no gradient) between
  supplies ``s_i = max(cos(o_i, z'_other), 0)`` (each online instance's affinity to the other
  view's target scene) and demands ``d_j = max(cos(t_j, q_v), 0)`` (each target instance's
  affinity to view v's online scene prediction), both normalised to sum 1; summed over v = 1, 2.

The paper's full text was not available to us: the three terms follow its abstract (scene-scene
similarity, scene-instance correlation, instance-instance discrimination by optimal transport),
the unofficial implementation (which takes supplies and demands against the mean of the two
views' scene features, the loss as -sum T* cos), and cost 1 - cosine with affinity-based
marginals. ``sum T* C = 1 - sum T* cos`` here, so both forms have the same gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mugs.distributed import all_reduce_mean
from mugs.methods.univip.sinkhorn import sinkhorn

_MIN_MASS = 1e-6  # a floor on supplies and demands before normalising (all-zero affinities: uniform)


def byol_error(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``2 - 2 cos(p, z)`` along the last dimension (BYOL's normalised squared error)."""
    return 2 - 2 * F.cosine_similarity(p.float(), z.float().detach(), dim=-1)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``x`` over the valid samples. Under DDP the count is the ranks' mean count, so that
    DDP's average of the ranks' gradients is the gradient of the global batch's masked mean (a
    rank's own count would weigh ranks with fewer valid samples more)."""
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype)
    return (x * m).sum() / all_reduce_mean(m.sum().detach()).clamp_min(1e-12)


class SceneSceneLoss(nn.Module):
    """``L_ss = l(q_1, z'_2) + l(q_2, z'_1)``, batch means."""

    def forward(self, preds: tuple[torch.Tensor, torch.Tensor], targets: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return byol_error(preds[0], targets[1]).mean() + byol_error(preds[1], targets[0]).mean()


class SceneInstanceLoss(nn.Module):
    """``L_si = l(a_1, z'_2) + l(a_2, z'_1)``: each view's aggregated online instances [B, D]
    against the other view's target scene; means over the samples whose instances are valid."""

    def forward(
        self,
        aggregated: tuple[torch.Tensor, torch.Tensor],
        targets: tuple[torch.Tensor, torch.Tensor],
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return _masked_mean(byol_error(aggregated[0], targets[1]), valid) + _masked_mean(
            byol_error(aggregated[1], targets[0]), valid
        )


class InstanceInstanceLoss(nn.Module):
    """``L_ii = sum_v sum_ij T*_ij (1 - cos(o_vi, t_(other)j))`` with the Sinkhorn plan between
    the instances' affinities to the scenes (see the module docstring)."""

    def __init__(self, eps: float, iters: int) -> None:
        super().__init__()
        self.eps, self.iters = eps, iters

    def plan(self, online: torch.Tensor, target: torch.Tensor, target_scene: torch.Tensor, online_scene: torch.Tensor) -> torch.Tensor:
        """T* [B, K, K] for online instances [B, K, D] against target instances [B, K, D]."""
        o, t = F.normalize(online.detach().float(), dim=-1), F.normalize(target.float(), dim=-1)
        cost = 1 - o @ t.transpose(-2, -1)
        supply = (o @ F.normalize(target_scene.float(), dim=-1).unsqueeze(-1)).squeeze(-1).clamp_min(_MIN_MASS)
        demand = (t @ F.normalize(online_scene.detach().float(), dim=-1).unsqueeze(-1)).squeeze(-1).clamp_min(_MIN_MASS)
        return sinkhorn(cost, supply / supply.sum(-1, keepdim=True), demand / demand.sum(-1, keepdim=True), self.eps, self.iters)

    def one_way(
        self, online: torch.Tensor, target: torch.Tensor, target_scene: torch.Tensor, online_scene: torch.Tensor,
        valid: torch.Tensor | None,
    ) -> torch.Tensor:
        plan = self.plan(online, target, target_scene, online_scene)
        cost = 1 - F.normalize(online.float(), dim=-1) @ F.normalize(target.float().detach(), dim=-1).transpose(-2, -1)
        return _masked_mean((plan * cost).sum((-2, -1)), valid)

    def forward(
        self,
        online: tuple[torch.Tensor, torch.Tensor],
        target: tuple[torch.Tensor, torch.Tensor],
        target_scenes: tuple[torch.Tensor, torch.Tensor],
        online_scenes: tuple[torch.Tensor, torch.Tensor],
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``online`` / ``target``: the two views' instances [B, K, D]; ``*_scenes``: the two
        views' scene vectors [B, D] (online: predictions, target: projections)."""
        return self.one_way(online[0], target[1], target_scenes[1], online_scenes[0], valid) + self.one_way(
            online[1], target[0], target_scenes[0], online_scenes[1], valid
        )
