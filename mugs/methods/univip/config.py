"""The ``method`` section of UniVIP (``method.name: univip``).

Defaults and their sources. The paper (Li et al., CVPR 2022, arXiv 2203.06965) builds on BYOL; its
full text was not available to us beyond the abstract, so the numbers come from BYOL (Grill et al.,
arXiv 2006.07733) and from the unofficial implementation utkutpcgl/UniVIP at 0d09c74:

- projector D -> 4096 -> 256 and predictor 256 -> 4096 -> 256, BatchNorm after the hidden layer:
  BYOL's heads (section 3.3), as in the unofficial code;
- ``n_instances`` (K) 4: the unofficial ``transforms.py``;
- ``sinkhorn_eps`` 0.1 and ``sinkhorn_iters`` 50: the unofficial ``sink_knop_dist.py`` (which
  names OTA's defaults, Ge et al., CVPR 2021, as UniVIP's);
- the three weights 1 / 1 / 1: the unofficial code sums the three losses;
- ``instance_scale`` [0.1, 0.5] of the overlap's area: ours (random boxes stand in for the
  paper's selective-search proposals, :mod:`.instances`); ``proposals`` reads boxes computed
  offline from a file instead (:mod:`.proposals`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mugs.errors import ConfigError
from mugs.validation import positive


@dataclass
class UnivipConfig:
    name: str = "univip"
    n_instances: int = 4
    instance_scale: list[float] = field(default_factory=lambda: [0.1, 0.5])
    projector_hidden_dim: int = 4096
    predictor_hidden_dim: int = 4096
    out_dim: int = 256
    head_bn: bool = True
    scene_weight: float = 1.0  # L_ss
    scene_instance_weight: float = 1.0  # L_si
    instance_weight: float = 1.0  # L_ii
    sinkhorn_eps: float = 0.1
    sinkhorn_iters: int = 50
    proposals: str | None = None  # a JSON file of per-image boxes (mugs/methods/univip/proposals.py)

    def validate(self, epochs: int, local_crops: int) -> None:
        positive(
            {
                "method.n_instances": self.n_instances,
                "method.projector_hidden_dim": self.projector_hidden_dim,
                "method.predictor_hidden_dim": self.predictor_hidden_dim,
                "method.out_dim": self.out_dim,
                "method.sinkhorn_eps": self.sinkhorn_eps,
                "method.sinkhorn_iters": self.sinkhorn_iters,
            }
        )
        s = self.instance_scale
        if not (len(s) == 2 and 0 < s[0] <= s[1] <= 1):
            raise ConfigError(f"method.instance_scale: [lo, hi] with 0 < lo <= hi <= 1, got {self.instance_scale}")
        weights = {k: getattr(self, k) for k in ("scene_weight", "scene_instance_weight", "instance_weight")}
        for key, w in weights.items():
            if w < 0:
                raise ConfigError(f"method.{key}: must be >= 0, got {w}")
        if sum(weights.values()) <= 0:
            raise ConfigError("method.scene_weight, scene_instance_weight, instance_weight: at least one must be > 0")
        if local_crops:
            raise ConfigError(
                f"data.local_crops_number: UniVIP trains on two scene views; got {local_crops} local crops (set 0)"
            )

    def validate_config(self, cfg: Any) -> None:
        """UniVIP needs the tensor views: its instances are drawn inside the views' overlap, from
        their crop geometry."""
        if cfg.data.augment_backend != "tensor":
            raise ConfigError("data.augment_backend: UniVIP needs 'tensor' (its views carry their geometry)")
        if self.proposals is not None and not Path(self.proposals).expanduser().is_file():
            raise ConfigError(f"method.proposals: {self.proposals}: not found")
