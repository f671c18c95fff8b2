"""Collapse diagnostics of the Mugs branches (other methods log theirs under the same kinds, e.g.
SMoG as ``diag/smog/...``), and the one verdict on them.

Computed by the loss modules on logged steps only (``Trainer.train_step(..., diagnose=True)``),
under ``no_grad``, autocast off, on detached float32 copies, before any queue or centre update,
consuming no random numbers: training numerics are unchanged. Keys (``diag/<branch>/<kind>``,
branch ``instance`` = IDS, ``local_group`` = LGDS, ``group`` = GDS; only enabled branches):

* ``target_std``: std across the batch of the L2-normalised teacher targets, mean over
  dimensions. Random directions in d dimensions: 1/sqrt(d); a constant target: 0.
* ``target_cos``: mean off-diagonal cosine between the batch's teacher targets. Random: ~0;
  constant: 1. For GDS the targets are the teacher's prototype logits before centring (a
  constant vector plus small noise is collapse; centring would hide it).
* ``logit_gap`` (IDS, LGDS): mean over the batch of positive logit minus mean negative logit,
  ``(s.t - mean_k s.b_k) / tau``, over the same crop pairs as the loss. Healthy training: well
  above 0 (the positive stands out); ~0 both for an untrained student and for a collapsed
  queue (all b_k ~ t), so the verdict reads it only together with the target cosine.
* ``batch_entropy`` / ``sample_entropy`` (GDS, nats): entropy of the batch-mean teacher
  assignment softmax((g_t - c) / tau_t), and the mean entropy of the per-sample assignments.
  Healthy: batch entropy high (many prototypes used), sample entropy low (sharp targets).
  Uniform targets: both ~ln(prototypes); one dominant prototype: both ~0.

Every statistic is taken per global view (teacher chunk) and averaged over the views, so the
two views of one image are never compared with each other. Under DDP each rank reports its own
batch. torch is imported where a statistic is computed: the key names and the verdict serve
the orchestration and the reports without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

PREFIX = "diag/"
BRANCHES = ("instance", "local_group", "group")
CONTRASTIVE_KINDS = ("target_std", "target_cos", "logit_gap")
GROUP_KINDS = ("target_std", "target_cos", "batch_entropy", "sample_entropy")

# Thresholds of the verdict, justified in :func:`collapse_reasons`.
MAX_TARGET_COS = 0.99
MIN_TARGET_STD = 1e-4
HIGH_TARGET_COS = 0.9
MIN_LOGIT_GAP = 0.1
MIN_ASSIGNMENT_INFO_NATS = 0.05

_F = TypeVar("_F", bound=Callable[..., Any])


SMOG_BRANCH = "smog"  # SMoG's group-level contrast (mugs.methods.smog): the group kinds
PWSELF_IMAGE_BRANCH = "pw_image"  # PW-Self's CLS self-distillation (mugs.methods.pwself)
PWSELF_PATCH_BRANCH = "pw_patch"  # PW-Self's matched-patch self-distillation
UNIVIP_SCENE_BRANCH = "univip_scene"  # UniVIP's momentum scene projections (mugs.methods.univip)
UNIVIP_INSTANCE_BRANCH = "univip_instance"  # UniVIP's momentum instance projections
TARGET_KINDS = ("target_std", "target_cos")  # BYOL-type targets: no queue, no prototypes
BRANCH_KINDS: dict[str, tuple[str, ...]] = {
    "instance": CONTRASTIVE_KINDS,
    "local_group": CONTRASTIVE_KINDS,
    "group": GROUP_KINDS,
    SMOG_BRANCH: GROUP_KINDS,
    PWSELF_IMAGE_BRANCH: GROUP_KINDS,
    PWSELF_PATCH_BRANCH: GROUP_KINDS,
    UNIVIP_SCENE_BRANCH: TARGET_KINDS,
    UNIVIP_INSTANCE_BRANCH: TARGET_KINDS,
}
DIAG_BRANCHES = tuple(BRANCH_KINDS)  # every method's branches, in the order reports show them


def branch_kinds(branch: str) -> tuple[str, ...]:
    """The diagnostic kinds logged for ``branch``."""
    return BRANCH_KINDS.get(branch, CONTRASTIVE_KINDS)


def diag_key(branch: str, kind: str) -> str:
    """Metric name of one diagnostic, e.g. ``diag/instance/target_std``."""
    return f"{PREFIX}{branch}/{kind}"


def _detached_fp32(fn: _F) -> _F:
    """Run ``fn`` under no_grad with autocast off, its tensor arguments as detached float32."""

    @wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        args = tuple(a.detach().float() if isinstance(a, torch.Tensor) else a for a in args)
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        with torch.no_grad(), torch.autocast(device_type=device, enabled=False):
            return fn(*args, **kwargs)

    return inner  # type: ignore[return-value]


@_detached_fp32
def target_std(t: torch.Tensor) -> torch.Tensor:
    """Std over the batch (unbiased) of the L2-normalised rows of ``t`` [N, d], mean over d.

    1/sqrt(d) for random directions, 0 for a constant batch; NaN for N < 2.
    """
    import torch
    import torch.nn.functional as F

    if t.shape[0] < 2:
        return torch.tensor(math.nan, device=t.device)
    return F.normalize(t, dim=-1).std(dim=0).mean()


@_detached_fp32
def mean_pairwise_cosine(t: torch.Tensor) -> torch.Tensor:
    """Mean cosine over the N(N-1) ordered pairs of distinct rows of ``t`` [N, d].

    From ``|sum z|^2 - sum |z|^2`` of the unit rows z: O(N d), no N x N matrix. A zero row
    counts as cosine 0 with everything. NaN for N < 2.
    """
    import torch
    import torch.nn.functional as F

    n = t.shape[0]
    if n < 2:
        return torch.tensor(math.nan, device=t.device)
    z = F.normalize(t, dim=-1)
    return (z.sum(0).square().sum() - z.square().sum()) / (n * (n - 1))


@_detached_fp32
def logit_gap(
    pred: torch.Tensor, target: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean over the batch of ``s.t / tau - mean_k s.b_k / tau`` (the InfoNCE logits).

    ``pred`` and ``target`` are [B, d]; ``negatives`` is [d, K] (the queue's layout).
    """
    pos = (pred * target).sum(-1)
    neg_mean = pred @ negatives.mean(dim=1)  # mean_k s.b_k = s . mean_k b_k
    return ((pos - neg_mean) / temperature).mean()


@_detached_fp32
def assignment_entropies(
    teacher_logits: torch.Tensor, center: torch.Tensor, temperature: float
) -> torch.Tensor:
    """[batch entropy, mean sample entropy] in nats of softmax((g_t - c) / tau_t) over [N, P] logits.

    Batch entropy: entropy of the assignment averaged over the batch; sample entropy: the
    per-sample entropies averaged. Both lie in [0, ln P]; batch >= sample (Jensen), with
    equality exactly when every sample has the same assignment.
    """
    import torch
    import torch.nn.functional as F

    logp = F.log_softmax((teacher_logits - center) / temperature, dim=-1)
    p = logp.exp()
    sample = -(p * logp).sum(-1).mean()
    batch = torch.special.entr(p.mean(0)).sum()
    return torch.stack([batch, sample])


def _per_view(fn: Callable[[torch.Tensor], torch.Tensor], chunks: Sequence[torch.Tensor]) -> torch.Tensor:
    import torch

    return torch.stack([fn(c) for c in chunks]).mean(0)


def target_diagnostics(teacher_chunks: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """``target_std`` and ``target_cos`` of the teacher targets, per view, averaged over views.

    The IDS / LGDS loss adds ``logit_gap`` itself, over its crop pairs (``pairing``).
    """
    return {
        "target_std": _per_view(target_std, teacher_chunks),
        "target_cos": _per_view(mean_pairwise_cosine, teacher_chunks),
    }


def group_diagnostics(
    teacher_chunks: Sequence[torch.Tensor], center: torch.Tensor, temperature: float
) -> dict[str, torch.Tensor]:
    """GDS: std and cosine of the teacher's prototype logits, entropies of its assignments."""
    ent = _per_view(lambda c: assignment_entropies(c, center, temperature), teacher_chunks)
    return {
        **target_diagnostics(teacher_chunks),
        "batch_entropy": ent[0],
        "sample_entropy": ent[1],
    }


def _number(metrics: Mapping[str, Any], key: str) -> float | None:
    v = metrics.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        return None
    return float(v)


def _reasons(metrics: Mapping[str, Any], branch: str) -> list[str]:
    def get(kind: str) -> float | None:
        return _number(metrics, diag_key(branch, kind))

    reasons = []
    cos, std, gap = get("target_cos"), get("target_std"), get("logit_gap")
    if cos is not None and cos > MAX_TARGET_COS:
        reasons.append(f"target_cos {cos:.4f} > {MAX_TARGET_COS}")
    if std is not None and std < MIN_TARGET_STD:
        reasons.append(f"target_std {std:.2g} < {MIN_TARGET_STD}")
    if cos is not None and gap is not None and cos > HIGH_TARGET_COS and gap < MIN_LOGIT_GAP:
        reasons.append(f"target_cos {cos:.4f} > {HIGH_TARGET_COS} with logit_gap {gap:.3f} < {MIN_LOGIT_GAP}")
    hb, hs = get("batch_entropy"), get("sample_entropy")
    if hb is not None and hs is not None and hb - hs < MIN_ASSIGNMENT_INFO_NATS:
        reasons.append(f"batch - sample entropy {hb - hs:.3f} < {MIN_ASSIGNMENT_INFO_NATS} nats")
    return reasons


def collapse_reasons(metrics: Mapping[str, Any]) -> dict[str, list[str]]:
    """Per collapsed branch, why, from the ``diag/...`` keys of one logged step.

    A branch is collapsed when any of these holds:

    * ``target_cos > MAX_TARGET_COS`` (0.99): for unit vectors the mean pairwise cosine is
      ~|mean target|^2, so 99 % of every target is one shared vector (isotropic rest: std
      ~0.1/sqrt(d)). Dimension-free. Random targets read ~0.
    * ``target_std < MIN_TARGET_STD`` (1e-4): numerically constant (0.1/sqrt(d) for
      d = 10^6, below any real head); catches all-zero targets, whose cosine reads 0.
    * IDS / LGDS: ``target_cos > HIGH_TARGET_COS`` (0.9) and ``logit_gap < MIN_LOGIT_GAP``
      (0.1): targets mostly shared and the positive no longer stands out of the queue. With
      negatives alike, loss ~ ln(1 + K exp(-gap)), so the loss is within ~0.1 nats of its
      chance value ln(K + 1). The gap alone is ~0 for an untrained student too, and a high
      cosine alone is passed through on the way to a good solution, so both are required.
    * GDS: ``batch_entropy - sample_entropy < MIN_ASSIGNMENT_INFO_NATS`` (0.05 nats): the
      mutual information between sample and prototype under the teacher's assignment. It is 0
      exactly when every sample gets the same assignment, whatever it is (uniform targets:
      both entropies ln P; one dominant prototype: both ~0), and ~ln N for N sharp distinct
      assignments. Needs neither P nor the batch size.

    Measured on the demo preset (220 steps, all branches): IDS targets start at cosine 0.80,
    reach 0.96 at the instance loss's minimum (step 25, gap 1.2: still learning, not flagged),
    0.99 by step 40 and 0.9995 at the end (gap 0.005, loss at ln(K + 1)); LGDS ends at cosine
    ~0.95 with gap ~0.01 (flagged by the joint rule, not by the cosine alone); GDS information
    falls from 0.5 nats (init) to 0.001 while both entropies reach ln(512) (uniform targets).

    Absent keys (a branch that is off, a step logged before diagnostics existed) and NaN give
    no verdict.
    """
    out: dict[str, list[str]] = {}
    for branch in logged_branches(metrics):
        reasons = _reasons(metrics, branch)
        if reasons:
            out[branch] = reasons
    return out


def logged_branches(metrics: Mapping[str, Any]) -> list[str]:
    """The branches with ``diag/<branch>/<kind>`` keys in ``metrics``, in :data:`DIAG_BRANCHES`
    order, then any other sorted."""
    found = {k[len(PREFIX) :].split("/", 1)[0] for k in metrics if isinstance(k, str) and k.startswith(PREFIX)}
    return [b for b in DIAG_BRANCHES if b in found] + sorted(found - set(DIAG_BRANCHES))


def collapsed_branches(metrics: Mapping[str, Any]) -> list[str]:
    """The branches that look collapsed (:func:`logged_branches` order); see :func:`collapse_reasons`."""
    return list(collapse_reasons(metrics))


def collapse_label(branches: Sequence[str]) -> str:
    """``"COLLAPSED (instance, group)"``, or "" when no branch collapsed."""
    return f"COLLAPSED ({', '.join(branches)})" if branches else ""
