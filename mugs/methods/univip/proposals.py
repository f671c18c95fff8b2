"""Instance proposals read from a file (``method.proposals``), for datasets that have them (e.g.
selective-search boxes computed offline, as UniVIP uses on COCO).

The file is JSON: an object from an image's :func:`mugs.data.datasets.sample_key` (an ImageFolder
image's path relative to its split folder, ``"class/file.jpg"``; an in-memory split's index,
``"17"``) to a list of boxes ``[top, left, height, width]`` in that image's pixels. It is read
with :func:`json.load` (no code runs) and checked whole before training starts.

Per sample, the boxes that lie wholly inside the two scene views' overlap are the candidates; K
of them are drawn with the sample's generator (without replacement, or all and then repeats when
fewer than K). With none, the data pipeline redraws the second view; when no draw gives one, the
K boxes are drawn at random inside the overlap instead (:func:`.instances.draw_boxes`).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

from mugs.errors import ConfigError

Proposals = dict[str, list[list[float]]]


def _check_box(key: str, box: object) -> list[float]:
    ok = (
        isinstance(box, list)
        and len(box) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
    )
    if not ok or box[2] <= 0 or box[3] <= 0 or box[0] < 0 or box[1] < 0:  # type: ignore[index]
        raise ConfigError(f"method.proposals: {key!r}: a box is [top, left, height, width] >= 0 with height, width > 0; got {box!r}")
    return [float(v) for v in box]  # type: ignore[union-attr]


def load_proposals(path: str | Path) -> Proposals:
    """The proposals of ``path``, checked; a ConfigError naming the first bad entry otherwise."""
    p = Path(path).expanduser()
    try:
        with p.open(encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"method.proposals: {p}: not found") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"method.proposals: {p}: not a JSON file ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"method.proposals: {p}: the top level must map image keys to lists of boxes")
    out: Proposals = {}
    for key, boxes in data.items():
        if not isinstance(boxes, list):
            raise ConfigError(f"method.proposals: {key!r}: expected a list of boxes, got {type(boxes).__name__}")
        out[key] = [_check_box(key, b) for b in boxes]
    return out


def inside(box: Sequence[float], region: Sequence[float]) -> bool:
    return (
        box[0] >= region[0]
        and box[1] >= region[1]
        and box[0] + box[2] <= region[0] + region[2]
        and box[1] + box[3] <= region[1] + region[3]
    )


def pick_boxes(rng: random.Random, boxes: Sequence[Sequence[float]], region: Sequence[float], k: int) -> list[list[float]] | None:
    """``k`` of the ``boxes`` that lie inside ``region``, drawn from ``rng``; None when none does."""
    candidates = [list(b) for b in boxes if inside(b, region)]
    if not candidates:
        return None
    if len(candidates) >= k:
        return rng.sample(candidates, k)
    return candidates + [rng.choice(candidates) for _ in range(k - len(candidates))]
