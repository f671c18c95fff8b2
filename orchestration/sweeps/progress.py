"""Live sweep progress: trials by state, best metric so far, ETA; a compact summary at the end."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from orchestration.sweeps.trial_state import progress_step, results
from orchestration.trial import TrialState, file_state

_SHOWN = (
    TrialState.DONE,
    TrialState.FAILED,
    TrialState.PRUNED,
    TrialState.EVALUATING,
    TrialState.RUNNING,
    TrialState.PENDING,
)


class SweepProgress:
    def __init__(
        self,
        name: str,
        trial_dirs: list[Path],
        metric: str,
        maximize: bool,
        references: list[Path] | None = None,
    ) -> None:
        self.name, self.dirs, self.metric, self.maximize = name, trial_dirs, metric, maximize
        self.references = set(references or [])  # counted, never the best
        self.t0 = time.time()
        self.start_ended = sum(file_state(d).ended for d in trial_dirs)
        self._last_key = ""
        self._last_print = 0.0

    def snapshot(self) -> dict:
        states = {d: file_state(d) for d in self.dirs}
        counts: dict[TrialState, int] = {}
        for s in states.values():
            counts[s] = counts.get(s, 0) + 1
        best = None
        for d, s in states.items():
            if s == TrialState.DONE and d not in self.references:
                v = results(d).get(self.metric)
                if v is not None and (best is None or (v > best[0] if self.maximize else v < best[0])):
                    best = (v, d.name)
        done_now = sum(n for s, n in counts.items() if s.ended)
        finished_here = max(0, done_now - self.start_ended)
        remaining = len(self.dirs) - done_now
        elapsed = time.time() - self.t0
        eta = elapsed / finished_here * remaining if finished_here else None
        steps = sum(progress_step(d) for d, s in states.items() if s == TrialState.RUNNING)
        return {"counts": counts, "best": best, "eta": eta, "elapsed": elapsed, "running_steps": steps}

    def line(self) -> str:
        s = self.snapshot()
        c = s["counts"]
        parts = [f"{k.value} {c[k]}" for k in _SHOWN if c.get(k)]
        best = f"best {self.metric} {s['best'][0]:.2f} ({s['best'][1]})" if s["best"] else "best -"
        eta = f"ETA {s['eta'] / 60:.1f} min" if s["eta"] is not None else "ETA -"
        return f"[{self.name}] {len(self.dirs)} trials: {', '.join(parts)} | {best} | {eta} | {s['elapsed']:.0f}s"

    def __call__(self) -> None:
        """Print when trial states change, or every 30 s."""
        line = self.line()
        key = line.split("|")[0] + line.split("|")[1]
        if key != self._last_key or time.time() - self._last_print > 30:
            self._last_key, self._last_print = key, time.time()
            print(line, file=sys.stderr, flush=True)
