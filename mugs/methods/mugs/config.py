"""The ``method`` section of Mugs (``method.name: mugs``, the default)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mugs.errors import ConfigError
from mugs.validation import in_unit_interval, positive


@dataclass
class MugsMethodConfig:
    name: str = "mugs"
    loss_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    instance_queue_size: int = 65536
    instance_temp: float = 0.2
    local_group_queue_size: int = 65536
    local_group_temp: float = 0.2
    memory_size: int = 65536
    topk: int = 8
    group_student_temp: float = 0.1
    group_warmup_teacher_temp: float = 0.04
    group_teacher_temp: float = 0.04
    group_warmup_teacher_temp_epochs: int = 0
    center_momentum: float = 0.9

    # a branch is on when its weight is > 0; off, its head, queue and memory are not built
    @property
    def uses_instance(self) -> bool:
        return self.loss_weights[0] > 0

    @property
    def uses_local_group(self) -> bool:
        return self.loss_weights[1] > 0

    @property
    def uses_group(self) -> bool:
        return self.loss_weights[2] > 0

    def validate(self, epochs: int, local_crops: int) -> None:
        w = self.loss_weights
        if len(w) != 3:
            raise ConfigError(
                f"method.loss_weights: expected 3 weights [instance, local_group, group], got {w}"
            )
        if any(x < 0 for x in w):
            raise ConfigError(f"method.loss_weights: weights must be >= 0, got {w}")
        if sum(w) <= 0:
            raise ConfigError(f"method.loss_weights: at least one weight must be > 0, got {w}")
        positive(
            {
                "method.instance_queue_size": self.instance_queue_size,
                "method.local_group_queue_size": self.local_group_queue_size,
                "method.memory_size": self.memory_size,
                "method.topk": self.topk,
            }
        )
        if self.topk > self.memory_size:
            raise ConfigError(
                f"method.topk: {self.topk} neighbours cannot exceed method.memory_size={self.memory_size}"
            )
        temps = {
            "method.instance_temp": self.instance_temp,
            "method.local_group_temp": self.local_group_temp,
            "method.group_student_temp": self.group_student_temp,
            "method.group_teacher_temp": self.group_teacher_temp,
            "method.group_warmup_teacher_temp": self.group_warmup_teacher_temp,
        }
        positive(temps, "temperature must be > 0")
        in_unit_interval("method.center_momentum", self.center_momentum)
        if self.group_warmup_teacher_temp_epochs > epochs:
            raise ConfigError(
                f"method.group_warmup_teacher_temp_epochs: {self.group_warmup_teacher_temp_epochs} "
                f"exceeds train.epochs={epochs}"
            )
