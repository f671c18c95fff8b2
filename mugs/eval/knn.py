"""Weighted k-nearest-neighbour classification on L2-normalised features (DINO/Mugs protocol).

Each test image votes with its k most similar training images, weighted by exp(sim / T),
T = 0.07. All k are evaluated in one pass from the largest k's neighbours.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def knn_classify(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    ks: list[int],
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> dict[int, float]:
    """Top-1 accuracy (percent) for each k."""
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    kmax = min(max(ks), train_f.shape[0])
    correct = {k: 0 for k in ks}
    for i in range(0, test_f.shape[0], chunk):
        f, y = test_f[i : i + chunk], test_y[i : i + chunk]
        sim, idx = (f @ train_f.T).topk(kmax, dim=1)
        onehot = torch.nn.functional.one_hot(train_y[idx], num_classes).float()  # [b, kmax, C]
        w = (sim / temperature).exp().unsqueeze(-1)
        for k in ks:
            kk = min(k, kmax)
            pred = (onehot[:, :kk] * w[:, :kk]).sum(1).argmax(1)
            correct[k] += int((pred == y).sum())
    return {k: 100.0 * correct[k] / test_f.shape[0] for k in ks}


def knn_summary(per_k: dict[int, float]) -> dict[str, float | int]:
    """The reported kNN numbers: ``knn_top1`` at k=20 (else the first k), ``knn_k``, ``knn_top1_k<k>``."""
    best_k = 20 if 20 in per_k else next(iter(per_k))
    return {"knn_top1": per_k[best_k], "knn_k": best_k, **{f"knn_top1_k{k}": v for k, v in per_k.items()}}
