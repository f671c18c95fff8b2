"""Reference trials: what every sweep measures besides its settings, so its report has a floor.

Per seed the sweep plans one reference trial of its base configuration (the profile's preset and
overrides, ``--set`` values, the swept keys left at the preset's values) that trains **0 steps**:
the pretraining job writes the initial checkpoint (the trainer seeds with ``cfg.seed`` and builds
the student backbone first, so the backbone equals every trial's initial backbone of that seed)
and the ordinary evaluation jobs run on it ("untrained network"). On small image datasets
(:data:`mugs.eval.PIXEL_DATASETS`) the trial also runs the ``pixels`` protocol, the same kNN on
raw pixels; its metrics are logged as ``eval/pixels/<name>`` beside the untrained network's
``eval/<name>``.

A reference trial goes through every backend like any trial, is resumable, is tagged
``mugs.reference=<kind>`` in MLflow, and never enters the search, the pruner or the best row.
This module is the one definition of those names (stdlib only: the report imports it).
"""

from __future__ import annotations

from collections.abc import Sequence

from mugs.eval import PIXEL_DATASETS, PIXELS
from orchestration import tags

REFERENCE_TAG = tags.REFERENCE  # on a reference trial's MLflow run: its kind
REFERENCE_COLUMN = "reference"  # its kind in trials.csv and in the report's frames and CSV ("" otherwise)
UNTRAINED = "untrained"  # the kind of the planned reference trial (0 training steps)
REFERENCE_LABELS = {UNTRAINED: "reference: untrained network", PIXELS: "reference: raw pixels"}
TRIAL_INFIX = "ref"  # reference trial ids: <sweep>-ref-<hash>
EVAL_PREFIX = "eval/"


def reference_evals(evals: Sequence[str], dataset: str) -> list[str]:
    """A reference trial's protocols: the sweep's evaluations, plus ``pixels`` on small image datasets."""
    out = list(evals)
    if dataset in PIXEL_DATASETS and PIXELS not in out:
        out.append(PIXELS)
    return out


def metric_prefix(protocol: str) -> str:
    """Where a protocol's results go in MLflow: ``eval/`` (knn, linear), ``eval/pixels/`` (pixels)."""
    return f"{EVAL_PREFIX}{PIXELS}/" if protocol == PIXELS else EVAL_PREFIX


def pixel_metric(metric: str) -> str:
    """The raw-pixel counterpart of a report metric: ``eval/knn_top1`` -> ``eval/pixels/knn_top1``."""
    if not metric.startswith(EVAL_PREFIX):
        return metric
    return metric_prefix(PIXELS) + metric[len(EVAL_PREFIX) :]
