"""Small checks shared by the config sections: each raises :class:`ConfigError` naming the key."""

from __future__ import annotations

from mugs.errors import ConfigError


def positive(values: dict[str, float], what: str = "must be > 0") -> None:
    """Every value > 0, else a ConfigError naming the first key that is not."""
    for key, v in values.items():
        if v <= 0:
            raise ConfigError(f"{key}: {what}, got {v}")


def in_unit_interval(key: str, value: float, closed_high: bool = False) -> None:
    """``0 <= value < 1`` (``<= 1`` with ``closed_high``)."""
    ok = 0 <= value <= 1 if closed_high else 0 <= value < 1
    if not ok:
        raise ConfigError(f"{key}: must be in [0, 1{']' if closed_high else ')'}, got {value}")
