"""Online kNN monitor: a cheap intermediate objective logged during pretraining.

Every ``eval.monitor_every`` steps the teacher backbone embeds a fixed, evenly strided set of
training images; every k-th of them (``monitor_queries`` in all) is classified by weighted kNN
against the others (``monitor_bank`` at most). Labels are used only here, never in training,
and the test split is never read, so sweeps can prune on this value without selecting on test.

Deterministic transforms and no DataLoader: the monitor consumes no random numbers, so a
resumed run stays bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mugs.config import MugsConfig
from mugs.data.datasets import load_split
from mugs.data.transforms import eval_transform
from mugs.eval.knn import knn_classify


def monitor_indices(n: int, bank: int, queries: int) -> tuple[list[int], list[int]]:
    """(bank indices, query indices) into a split of ``n`` images: disjoint, strided, fixed."""
    total = min(n, bank + queries)
    picked = [int(i * n / total) for i in range(total)]
    stride = max(2, total // max(1, min(queries, total - 1)))
    q = picked[::stride][:queries]
    qs = set(q)
    return [i for i in picked if i not in qs][:bank], q


class KnnMonitor:
    def __init__(self, cfg: MugsConfig, batch_size: int = 256) -> None:
        self.k, self.temperature = cfg.eval.monitor_k, cfg.eval.knn_temperature
        self.ds = load_split(cfg.data, "train", eval_transform(cfg.data.image_size))
        self.bank, self.queries = monitor_indices(
            len(self.ds),  # type: ignore[arg-type]
            cfg.eval.monitor_bank,
            cfg.eval.monitor_queries,
        )
        self.batch_size = batch_size

    @torch.no_grad()
    def _embed(
        self, backbone: torch.nn.Module, idx: list[int], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feats, labels = [], []
        for i in range(0, len(idx), self.batch_size):
            items = [self.ds[j] for j in idx[i : i + self.batch_size]]
            x = torch.stack([im for im, _ in items]).to(device)
            feats.append(F.normalize(backbone.cls(x).float(), dim=-1).cpu())
            labels.append(torch.as_tensor([y for _, y in items]))
        return torch.cat(feats), torch.cat(labels)

    def __call__(self, backbone: torch.nn.Module, device: torch.device) -> float:
        """kNN top-1 (percent) of the query images."""
        was_training = backbone.training
        backbone.eval()
        try:
            xb, yb = self._embed(backbone, self.bank, device)
            xq, yq = self._embed(backbone, self.queries, device)
        finally:
            backbone.train(was_training)
        return knn_classify(xb, yb, xq, yq, [self.k], self.temperature)[self.k]
