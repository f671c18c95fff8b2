"""Early stopping of unpromising trials (``search.pruner: median | asha``), for every backend.

Trials run the trainer's online kNN monitor (``monitor/knn_top1``: held-out *training* images,
never the test split) every ``search.pruning.every`` steps. On each progress tick the driver
reads the new monitor values from the trials' ``metrics.jsonl``, reports them to an Optuna study
kept in ``pruning.journal`` beside the sweep state, and asks Optuna's pruner:

- ``median``: :class:`optuna.pruners.MedianPruner`, prune when the trial's best value so far
  is below the median of the completed trials' values at the same step (after
  ``startup_trials`` completed trials and ``warmup`` steps); a setting counts as completed as
  soon as its pretraining is over (its monitor values are final; evaluations may still run);
- ``asha``: :class:`optuna.pruners.SuccessiveHalvingPruner`, asynchronous successive halving
  with rungs at ``min_resource * reduction_factor**r`` steps.

The unit of pruning is a setting: its seeds' monitor values are averaged at each step, and a
pruned setting stops all its seeds. A pruned trial gets a ``PRUNED`` marker (so a resumed
sweep never reruns it), its jobs are cancelled (the trainer checkpoints at the next step and
exits), and its MLflow run ends KILLED with ``mugs.pruned=true``. Every decision is appended to
``pruning.jsonl`` with what it was based on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestration import tags, tracking
from orchestration.jobs.tracking_calls import safe
from orchestration.trial import TrialPaths, TrialSpec, TrialState, config_hash, file_state

MONITOR_KEY = "monitor/knn_top1"


def setting_key(trial_dir: Path) -> str:
    """The hash of a trial's config without its seed: the trials of one setting share it."""
    cfg = dict(TrialSpec.load(trial_dir).config)
    cfg.pop("seed", None)
    return config_hash(cfg)


class MonitorReader:
    """Incremental reader of one trial's monitor values (step -> value) from metrics.jsonl."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.values = path, 0, {}

    def read(self) -> dict[int, float]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return self.values
        if size < self.offset:  # rewritten on resume (lines past the checkpoint dropped)
            self.offset = 0
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # only whole lines; a line being written waits
        self.offset += end
        for line in chunk[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if MONITOR_KEY in rec:
                self.values[int(rec["step"])] = float(rec[MONITOR_KEY])
        return self.values


@dataclass
class _Unit:
    key: str
    dirs: list[Path]
    readers: list[MonitorReader] = field(default_factory=list)
    trial_id: int | None = None  # Optuna's internal id in the pruning study
    number: int | None = None  # the same trial's number (what study.tell takes)
    closed: bool = False


def _build_pruner(search: Any) -> Any:
    import optuna

    p = search.pruning
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup, interval_steps=1
        )
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=p.min_resource or p.every,
        reduction_factor=p.reduction_factor,
        min_early_stopping_rate=0,
    )


class SweepPruner:
    """Feeds monitor values to an Optuna pruner and stops the trials it prunes."""

    def __init__(self, search: Any, sweep_dir: Path, tracking_uri: str, study_name: str) -> None:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.rule = search.pruner
        self.uri = tracking_uri
        self.log_path = sweep_dir / "pruning.jsonl"
        storage = JournalStorage(JournalFileBackend(str(sweep_dir / "pruning.journal")))
        self.study = optuna.create_study(
            study_name=f"{study_name}-pruning",
            storage=storage,
            direction="maximize",  # kNN accuracy
            pruner=_build_pruner(search),
            load_if_exists=True,
        )
        self.units: dict[str, _Unit] = {}

    # ------------------------------------------------------------ bookkeeping
    def register(self, trial_dirs: list[Path]) -> None:
        """Group trial directories by setting and attach each setting to a study trial
        (the one an earlier driver opened, if still open)."""
        import optuna

        for d in trial_dirs:
            key = setting_key(d)
            unit = self.units.setdefault(key, _Unit(key, []))
            if d not in unit.dirs:
                unit.dirs.append(d)
                unit.readers.append(MonitorReader(TrialPaths(d).metrics))
        states = optuna.trial.TrialState
        by_key: dict[str, Any] = {}
        for t in self.study.get_trials(deepcopy=False):
            k = t.user_attrs.get("setting")
            if k is not None and t.state != states.FAIL:
                by_key[k] = t  # the newest wins
        for key, unit in self.units.items():
            if unit.trial_id is not None:
                continue
            t = by_key.get(key)
            if t is not None and t.state in (states.PRUNED, states.COMPLETE):
                unit.closed = True
            elif t is not None:
                unit.trial_id, unit.number = t._trial_id, t.number
            else:
                trial = self.study.ask()
                trial.set_user_attr("setting", key)
                trial.set_user_attr("trials", [d.name for d in unit.dirs])
                unit.trial_id, unit.number = trial._trial_id, trial.number

    def _trial(self, unit: _Unit) -> Any:
        """A live handle on the setting's study trial (ask() made it, possibly in an earlier driver)."""
        import optuna

        return optuna.trial.Trial(self.study, unit.trial_id)

    def _frozen(self, unit: _Unit) -> Any:
        return next(t for t in self.study.get_trials(deepcopy=False) if t.number == unit.number)

    def _reported(self) -> dict[int, set[int]]:
        """Steps already reported, per study trial number (one storage read per tick)."""
        return {t.number: set(t.intermediate_values) for t in self.study.get_trials(deepcopy=False)}

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.log_path, "a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), "rule": self.rule, **record}) + "\n")

    # ------------------------------------------------------------------ tick
    def tick(self) -> None:
        """Report new monitor values, prune what the rule says, close finished settings."""
        reported = self._reported()
        for unit in self.units.values():
            if unit.closed:  # every open unit has its study trial (register)
                continue
            states = [file_state(d) for d in unit.dirs]  # read before the values: none missed
            series = [r.read() for r in unit.readers]
            common = sorted(set.intersection(*(set(s) for s in series))) if series else []
            pretraining = all(s in (TrialState.RUNNING, TrialState.PENDING) for s in states)
            for step in common:
                if step in reported.get(unit.number, ()):  # type: ignore[arg-type]
                    continue
                value = sum(s[step] for s in series) / len(series)
                trial = self._trial(unit)
                trial.report(value, step)
                context = self._context(unit, step)
                # asked even when pretraining is over: ASHA records rung values as it answers
                verdict = bool(trial.should_prune())  # numpy bool from some pruners
                record = {"setting": unit.key, "step": step, "value": value, "verdict": verdict}
                record.update(pretraining=pretraining, **context)
                self._log({**record, "pruned": verdict and pretraining})
                if verdict and pretraining:  # pretraining over: nothing left to save by stopping
                    self._prune(unit, step, value)
                    break
            if unit.closed:
                continue
            if all(s == TrialState.EVALUATING or s.ended for s in states):
                self._close(unit, states)  # pretraining is over: its monitor values are final

    def _context(self, unit: _Unit, step: int) -> dict[str, Any]:
        """What the decision at ``step`` is based on (for the log and its audit)."""
        trials = self.study.get_trials(deepcopy=False)
        own = next(t for t in trials if t.number == unit.number)
        return {
            "trials": [d.name for d in unit.dirs],
            "best_so_far": max(own.intermediate_values.values()),
            "completed": {
                t.user_attrs.get("setting"): t.intermediate_values.get(step)
                for t in trials
                if t.state.name == "COMPLETE"
            },
        }

    def _prune(self, unit: _Unit, step: int, value: float) -> None:
        import optuna

        from orchestration.status import cancel_jobs

        reason = f"pruned by the {self.rule} rule at step {step} (monitor kNN {value:.2f})"
        for d in unit.dirs:
            TrialPaths(d).pruned.write_text(reason + "\n")
            try:
                cancel_jobs(TrialSpec.load(d), reason)  # the PRUNED marker is final already
            except Exception as e:  # the trial may have ended meanwhile; the marker still holds
                print(f"warning: cancelling {d.name}: {type(e).__name__}: {e}", flush=True)
            spec = TrialSpec.load(d)
            if spec.run_id:
                safe(
                    tracking.set_tags,
                    self.uri,
                    spec.run_id,
                    {tags.PRUNED: "true", tags.PRUNED_AT_STEP: str(step), tags.PRUNE_RULE: self.rule},
                )
        self.study.tell(unit.number, state=optuna.trial.TrialState.PRUNED)
        unit.closed = True
        print(f"[pruning] {', '.join(d.name for d in unit.dirs)}: {reason}", flush=True)

    def _close(self, unit: _Unit, states: list[TrialState]) -> None:
        """End the setting's study trial once pretraining is over (evaluations may still run):
        COMPLETE with its last monitor value, so later trials are compared with it at once."""
        import optuna

        frozen = self._frozen(unit)
        iv = frozen.intermediate_values
        if TrialState.PRUNED in states:
            self.study.tell(unit.number, state=optuna.trial.TrialState.PRUNED)
        elif TrialState.FAILED in states or not iv:
            self.study.tell(unit.number, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(unit.number, iv[max(iv)])
        unit.closed = True
