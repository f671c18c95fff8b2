"""SMoG's group features: nearest-group assignment, the synchronous momentum update, the feature
bank and the k-means reset.

Pang et al., "Unsupervised Visual Representation Learning by Synchronous Momentum Grouping"
(ECCV 2022, arXiv 2207.06167). With unit features z_i and unit group features g_k:

- assignment (before the update): a_i = argmax_k z_i . g_k (cosine similarity);
- momentum update with the features assigned to each group in this step (all ranks' features):
  g_k <- normalise(beta g_k + (1 - beta) mean_{i: a_i = k} z_i), groups without features unchanged;
- every ``reset_every`` steps: g = the centres of a spherical k-means over a bank of recent
  features (the method then also re-synchronises the momentum encoder).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def assign(z: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Index of the nearest group (cosine) of every row of ``z`` [N, D] among ``groups`` [K, D]."""
    return (F.normalize(z.float(), dim=-1) @ F.normalize(groups.float(), dim=-1).T).argmax(dim=-1)


def momentum_update(groups: torch.Tensor, z: torch.Tensor, a: torch.Tensor, beta: float) -> torch.Tensor:
    """The groups after one synchronous momentum step with features ``z`` assigned to ``a``.

    ``g_k <- normalise(beta g_k + (1 - beta) mean_{a_i = k} normalise(z_i))`` for every group that
    received a feature; the others are returned as they were.
    """
    z = F.normalize(z.float(), dim=-1)
    k = groups.shape[0]
    sums = torch.zeros(k, z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, a, z)
    counts = torch.bincount(a, minlength=k).to(z.dtype)
    hit = counts > 0
    means = sums / counts.clamp_min(1).unsqueeze(1)
    moved = F.normalize(beta * groups.float() + (1 - beta) * means, dim=-1)
    return torch.where(hit.unsqueeze(1), moved, groups.float()).to(groups.dtype)


def spherical_kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` unit centres of the unit rows of ``x`` [N, D] (N >= k): initialised on k distinct rows
    drawn from ``generator``, then ``iters`` rounds of nearest-centre assignment (cosine) and
    centre = normalised mean of its rows; a centre left without rows keeps its place."""
    x = F.normalize(x.float(), dim=-1)
    idx = torch.randperm(x.shape[0], generator=generator, device="cpu")[:k].to(x.device)
    centres = x[idx].clone()
    for _ in range(iters):
        a = assign(x, centres)
        sums = torch.zeros_like(centres).index_add_(0, a, x)
        hit = torch.bincount(a, minlength=k) > 0
        centres = torch.where(hit.unsqueeze(1), F.normalize(sums, dim=-1), centres)
    return centres


class GroupFeatures(nn.Module):
    """The K group features and the FIFO bank of features they are reset from (buffers: they
    travel with the checkpoint and are identical on every rank)."""

    def __init__(self, n_groups: int, dim: int, bank_size: int, generator: torch.Generator) -> None:
        super().__init__()
        init = F.normalize(torch.randn(n_groups, dim, generator=generator), dim=-1)
        self.register_buffer("groups", init)
        self.register_buffer("bank", torch.zeros(bank_size, dim))
        self.register_buffer("bank_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("bank_filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, z: torch.Tensor, a: torch.Tensor, beta: float) -> None:
        self.groups.copy_(momentum_update(self.groups, z, a, beta))

    @torch.no_grad()
    def enqueue(self, z: torch.Tensor) -> None:
        """Write unit rows of ``z`` into the bank, oldest first out."""
        n, size = z.shape[0], self.bank.shape[0]
        z = F.normalize(z.float(), dim=-1)[-size:]
        pos = (self.bank_ptr + torch.arange(z.shape[0], device=z.device)) % size
        self.bank[pos] = z.to(self.bank.dtype)
        self.bank_ptr.copy_((self.bank_ptr + n) % size)
        self.bank_filled.copy_(torch.clamp(self.bank_filled + n, max=size))

    @torch.no_grad()
    def reset(self, iters: int, generator: torch.Generator) -> bool:
        """Groups <- spherical k-means centres of the bank; False (nothing done) while the bank
        holds fewer features than groups."""
        filled, k = int(self.bank_filled), self.groups.shape[0]
        if filled < k:
            return False
        self.groups.copy_(spherical_kmeans(self.bank[:filled], k, iters, generator))
        return True
