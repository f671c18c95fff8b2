"""The ``method`` section of PW-Self (``method.name: pwself``).

Defaults and their sources. The paper (Javidani et al., arXiv 2310.18651) gives the method; its
full text was not available to us beyond the abstract, so the numbers come from the authors'
repository (alijavidani/Local_Global_Representation_Learning at 7eeff8c, ``patch_wise_dino.py``
argparse, a DINO fork) where it has them, else from DINO/Mugs:

- ``out_dim`` 10000, ``teacher_temp`` / ``warmup_teacher_temp`` 0.04 with 0 warm-up epochs,
  ``student_temp`` 0.1, ``center_momentum`` 0.9, ``norm_last_layer`` on, no BatchNorm in the
  head: the authors' defaults (their one DINO head, hidden 2048, bottleneck 256, on every token);
- ``image_weight`` / ``patch_weight`` 1 / 1: the authors average the CLS position together with
  the matched patches (the CLS then weighs 1 / (M + 1) of a pair, M the matched patches); their
  ``lamda`` 0.9 is defined but unused. Here the two are separate terms with their own weights;
- the per-patch jitter (not in the authors' code): torchvision's ColorJitter strengths and the
  probabilities DINO uses for whole views (0.4, 0.4, 0.2, 0.1; 0.8; grey 0.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mugs.errors import ConfigError
from mugs.validation import in_unit_interval, positive


@dataclass
class PwSelfConfig:
    name: str = "pwself"
    out_dim: int = 10000
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    norm_last_layer: bool = True
    head_bn: bool = False
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    center_momentum: float = 0.9
    image_weight: float = 1.0  # the CLS (image-level) term
    patch_weight: float = 1.0  # the matched patches' term
    patch_jitter: bool = True  # each patch colour-jittered on its own (mugs.data.patch_jitter)
    patch_brightness: float = 0.4
    patch_contrast: float = 0.4
    patch_saturation: float = 0.2
    patch_hue: float = 0.1
    patch_jitter_p: float = 0.8
    patch_gray_p: float = 0.2

    def validate(self, epochs: int, local_crops: int) -> None:
        positive({"method.out_dim": self.out_dim, "method.head_hidden_dim": self.head_hidden_dim,
                  "method.head_bottleneck_dim": self.head_bottleneck_dim})
        positive({"method.student_temp": self.student_temp, "method.teacher_temp": self.teacher_temp,
                  "method.warmup_teacher_temp": self.warmup_teacher_temp}, "temperature must be > 0")
        in_unit_interval("method.center_momentum", self.center_momentum)
        for key in ("image_weight", "patch_weight", "patch_brightness", "patch_contrast", "patch_saturation"):
            if getattr(self, key) < 0:
                raise ConfigError(f"method.{key}: must be >= 0, got {getattr(self, key)}")
        if self.image_weight + self.patch_weight <= 0:
            raise ConfigError("method.image_weight, method.patch_weight: at least one must be > 0")
        if not 0 <= self.patch_hue <= 0.5:
            raise ConfigError(f"method.patch_hue: in [0, 0.5], got {self.patch_hue}")
        in_unit_interval("method.patch_jitter_p", self.patch_jitter_p, closed_high=True)
        in_unit_interval("method.patch_gray_p", self.patch_gray_p, closed_high=True)
        if not 0 <= self.warmup_teacher_temp_epochs <= epochs:
            raise ConfigError(
                f"method.warmup_teacher_temp_epochs: in [0, train.epochs={epochs}], got {self.warmup_teacher_temp_epochs}"
            )

    def validate_config(self, cfg: Any) -> None:
        """What PW-Self needs of the other sections: the tensor views (crop geometry, per-patch
        jitter) and crops that are whole numbers of patches."""
        d, p = cfg.data, cfg.model.patch_size
        if d.augment_backend != "tensor":
            raise ConfigError("data.augment_backend: PW-Self needs 'tensor' (its views carry their geometry)")
        for key, size in (("data.image_size", d.image_size), ("data.local_crop_size", d.local_crop_size)):
            if size % p:
                raise ConfigError(f"{key}: {size} px is not a whole number of model.patch_size={p} px patches")
