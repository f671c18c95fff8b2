"""Entropic optimal transport by Sinkhorn's iterations in the log domain.

For a cost ``C`` [n, m], supplies ``a`` [n] and demands ``b`` [m] of equal mass, the plan

    T* = argmin_T <T, C> - eps H(T)   subject to   T 1 = a,  T^T 1 = b,  T >= 0

is ``T_ij = exp((f_i + g_j - C_ij) / eps)`` for the dual potentials f, g, which the iterations

    f <- eps (log a - logsumexp_j((g_j - C_ij) / eps)),   g <- eps (log b - logsumexp_i((f_i - C_ij) / eps))

converge to (Cuturi, NeurIPS 2013; the log-domain form: Peyre and Cuturi, "Computational Optimal
Transport", 2019, section 4.4). Working with potentials instead of the scalings exp(f / eps)
keeps small ``eps`` finite: nothing is exponentiated before the end, and ``logsumexp`` subtracts
its maximum. After each g-update the column sums are exact; the iterations stop when the row
sums are within ``tol`` of the supplies (or after ``iters``).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def sinkhorn(
    cost: torch.Tensor, supply: torch.Tensor, demand: torch.Tensor, eps: float, iters: int = 50, tol: float = 1e-6
) -> torch.Tensor:
    """The entropic transport plan [..., n, m] for ``cost`` [..., n, m] between ``supply``
    [..., n] and ``demand`` [..., m] (positive, each batch entry of equal total mass), computed in
    float32 or wider; no gradient (the plan is a target)."""
    cost = cost.float() if cost.dtype in (torch.float16, torch.bfloat16) else cost
    log_a, log_b = supply.to(cost.dtype).log(), demand.to(cost.dtype).log()
    f = torch.zeros_like(log_a)
    g = torch.zeros_like(log_b)
    for _ in range(iters):
        f = eps * (log_a - torch.logsumexp((g.unsqueeze(-2) - cost) / eps, dim=-1))
        g = eps * (log_b - torch.logsumexp((f.unsqueeze(-1) - cost) / eps, dim=-2))
        rows = torch.logsumexp((f.unsqueeze(-1) + g.unsqueeze(-2) - cost) / eps, dim=-1).exp()
        if (rows - supply).abs().max() <= tol:
            break
    return torch.exp((f.unsqueeze(-1) + g.unsqueeze(-2) - cost) / eps)
