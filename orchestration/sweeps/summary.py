"""The sweep's closing summary on the terminal: trials by state, the best row, collapsed trials."""

from __future__ import annotations

from typing import Any

from mugs.diagnostics import collapse_label
from orchestration.reference import REFERENCE_COLUMN
from orchestration.trial import TrialState


def summarize(name: str, rows: list[dict[str, Any]], metric: str, maximize: bool) -> None:
    """``rows``: the trials.csv rows (``state`` a :class:`TrialState` value)."""

    def count(state: TrialState) -> int:
        return sum(r["state"] == state for r in rows)

    done = [r for r in rows if r["state"] == TrialState.DONE and metric in r and not r.get(REFERENCE_COLUMN)]
    parts = [f"{count(s)} {s.value}" for s in (TrialState.DONE, TrialState.FAILED, TrialState.PRUNED)]
    stopped = count(TrialState.STOPPED) + sum(TrialState(r["state"]).in_flight for r in rows)
    if stopped:
        parts.append(f"{stopped} unfinished")
    print(f"\n[{name}] {len(rows)} trials: {', '.join(parts)}")
    if done:
        best = (max if maximize else min)(done, key=lambda r: r[metric])
        print(f"  best {metric} = {best[metric]:.2f}  ({best['trial_id']}, seed {best['seed']})")
    flagged = [r for r in rows if r.get("collapsed")]
    for r in flagged:
        print(f"  {r['trial_id']}: {collapse_label(r['collapsed'].split(','))} (latest logged diagnostics)")
