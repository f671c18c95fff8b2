"""The ``method`` section of SMoG (``method.name: smog``).

Defaults and their sources (the paper's full text was not available to us; what is not marked
"paper" comes from lightly's unofficial implementation, lightly-ai/lightly at e8d317fc:
``examples/pytorch/smog.py`` and ``docs/source/getting_started/benchmarks/cifar10_benchmark.py``):

- ``n_groups`` 300, ``group_momentum`` (beta) 0.99, ``temperature`` 0.1: lightly's example and
  CIFAR-10 benchmark (its comment there: 3000 groups are about 2 points better, "optimal");
- ``reset_every`` 300 steps with k-means over a bank of momentum features, and the momentum
  encoder re-synchronised with the online one at each reset: lightly's example and benchmark
  (which cite the paper's Table 7b for the reset);
- projector D -> 2048 -> 128 and predictor 128 -> 2048 -> 128, BatchNorm after every hidden layer
  and after the projector's output (the paper's description, as quoted in lightly's
  ``SMoGProjectionHead`` docstring);
- ``bank_size`` 10000: lightly's CIFAR-10 benchmark.

Views: two global views here (``data.local_crops_number`` 0). lightly's ``SMoGTransform``
(lightly-ai/lightly at 0c1e00c9, ``lightly/transforms/smog_transform.py``) defaults to multi-crop,
4 views of 224 px (scale 0.2-1) and 4 of 96 px (0.05-0.2), without citing where in the paper;
whether the paper's ImageNet recipe uses multi-crop could not be checked here.
"""

from __future__ import annotations

from dataclasses import dataclass

from mugs.errors import ConfigError
from mugs.validation import in_unit_interval, positive


@dataclass
class SmogConfig:
    name: str = "smog"
    n_groups: int = 300
    group_momentum: float = 0.99  # beta: g_k <- beta g_k + (1 - beta) mean of its assigned features
    temperature: float = 0.1
    reset_every: int = 300  # steps between k-means resets of the groups (0: never)
    bank_size: int = 10000  # momentum features kept for the k-means reset
    kmeans_iters: int = 10
    projector_hidden_dim: int = 2048
    predictor_hidden_dim: int = 2048
    out_dim: int = 128
    head_bn: bool = True  # BatchNorm in the projector and predictor, as the paper describes

    def validate(self, epochs: int, local_crops: int) -> None:
        positive(
            {
                "method.n_groups": self.n_groups,
                "method.temperature": self.temperature,
                "method.bank_size": self.bank_size,
                "method.kmeans_iters": self.kmeans_iters,
                "method.projector_hidden_dim": self.projector_hidden_dim,
                "method.predictor_hidden_dim": self.predictor_hidden_dim,
                "method.out_dim": self.out_dim,
            }
        )
        in_unit_interval("method.group_momentum", self.group_momentum)
        if self.reset_every < 0:
            raise ConfigError(f"method.reset_every: must be >= 0 (0 = never), got {self.reset_every}")
        if self.reset_every and self.bank_size < self.n_groups:
            raise ConfigError(
                f"method.bank_size: {self.bank_size} features cannot seed method.n_groups={self.n_groups} "
                "k-means centres"
            )
        if local_crops:
            raise ConfigError(
                f"data.local_crops_number: SMoG here trains on two global views; got {local_crops} "
                "local crops (set 0)"
            )
