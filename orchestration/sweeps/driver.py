"""The sweep driver: validate everything, then create the parent run and trials, run what is not
finished (re-attaching what is still running), and record the outcome. Rerunning the same command
continues the sweep; trials are identified by the hash of their resolved config (seed included).
Besides its settings a sweep runs one untrained reference trial per seed
(:mod:`orchestration.reference`): same backends, same evaluations, outside the search, the
pruner and the best row."""

from __future__ import annotations

import json
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mugs.config import ConfigError, parse_override
from orchestration import tags, tracking
from orchestration.failpoints import failpoint
from orchestration.jobs.tracking_calls import safe
from orchestration.reference import REFERENCE_COLUMN, REFERENCE_LABELS
from orchestration.submit import prepare_trial
from orchestration.sweeps.expand import TrialPlan, grid, plan, random_search, reference_plans
from orchestration.sweeps.progress import SweepProgress
from orchestration.sweeps.spec import SpecError, SweepSpec, load_spec
from orchestration.sweeps.state import driver_lock, load_state, save_state, trials_csv
from orchestration.sweeps.summary import summarize
from orchestration.sweeps.trial_state import classify, collapsed, jobs_unfinished, results
from orchestration.trial import TrialPaths, TrialSpec, TrialState, read_jobs

SWEEP_BACKENDS = ("local", "ray", "slurm")


@dataclass
class SweepRequest:
    spec_path: str
    workdir: Path
    tracking_uri: str | None = None
    backend: str | None = None
    address: str | None = None
    profile: str | None = None
    sets: list[str] = field(default_factory=list)
    slurm: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    validate: bool = False
    max_trials: int = 10_000


def _flatten_set(item: str) -> tuple[str, Any]:
    nested = parse_override(item)
    key = item.split("=", 1)[0].strip()
    node: Any = nested
    for part in key.split("."):
        node = node[part]
    return key, node


def prepare_spec(req: SweepRequest) -> tuple[SweepSpec, dict[str, Any]]:
    spec = load_spec(req.spec_path)
    if req.backend is not None:
        if req.backend not in SWEEP_BACKENDS:
            raise SpecError(
                f"--backend: unknown backend {req.backend!r} (known: {', '.join(SWEEP_BACKENDS)})"
            )
        spec.backend.name = req.backend  # type: ignore[assignment]
    if req.address:
        spec.backend.address = req.address
    if req.slurm:
        spec.backend.slurm.update(req.slurm)
    if spec.backend.name == "ray" and not spec.backend.address:
        raise SpecError(
            f"{req.spec_path}: backend.address: the ray backend needs a cluster address (--address)"
        )
    extra: dict[str, Any] = {}
    profile = req.profile or spec.default_profile
    if profile:
        if profile not in spec.profiles:
            known = ", ".join(sorted(spec.profiles)) or "none"
            raise SpecError(f"{req.spec_path}: --profile {profile!r} not in profiles (known: {known})")
        prof = spec.profiles[profile]
        if prof.preset:
            spec.base.preset = prof.preset
        spec.base.method_presets.update(prof.method_presets)
        for name, over in prof.method_overrides.items():
            spec.base.method_overrides[name] = {**spec.base.method_overrides.get(name, {}), **over}
        if prof.evals is not None:
            spec.evals = prof.evals
        if prof.pruning is not None:
            spec.search.pruning = prof.pruning
        extra.update(prof.overrides)
    if spec.search.pruner != "none" and spec.search.pruning is not None:
        extra["eval.monitor_every"] = spec.search.pruning.every  # the intermediate objective
    for item in req.sets:
        try:
            k, v = _flatten_set(item)
        except ConfigError as e:
            raise SpecError(f"--set: {e}") from e
        extra[k] = v
    return spec, extra


def expand(
    spec: SweepSpec, extra: dict[str, Any], spec_path: str, max_trials: int = 10_000
) -> list[TrialPlan]:
    """All trials of a grid/random sweep, every config validated (errors name the spec file).
    The count is checked against ``max_trials`` before anything is expanded."""
    n = spec.planned_trials()
    if n > max_trials:
        sizes = " x ".join(str(ax.size() or "?") for ax in spec.axes)
        raise SpecError(
            f"{spec_path}: the sweep plans {n:,} trials ({sizes} values x {len(spec.seeds)} seeds), "
            f"more than --max-trials {max_trials:,}; check the axes' ranges or raise --max-trials"
        )
    try:
        if spec.search.kind == "grid":
            return grid(spec, extra)
        if spec.search.kind == "random":
            return random_search(spec, extra)
        # optuna: validate the base config and every listed option of every axis
        for ax in spec.axes:
            options = ax.grid_values() if ax.low is None else [ax.low, ax.high]
            for v in options:
                plan(spec, {k: (int(v) if ax.integer else v) for k in ax.keys}, spec.seeds[0], extra)
        return []
    except ConfigError as e:
        raise SpecError(f"{spec_path}: {e}") from e


def expand_references(spec: SweepSpec, extra: dict[str, Any], spec_path: str) -> list[TrialPlan]:
    """The sweep's reference trials (one per seed), validated like its trials."""
    try:
        return reference_plans(spec, extra)
    except ConfigError as e:
        raise SpecError(f"{spec_path}: reference trial (base config): {e}") from e


def _print_references(refs: list[TrialPlan]) -> None:
    if not refs:
        return
    print(
        f"reference trials: {len(refs)} (0 training steps; base config, swept keys at the preset's values; "
        "not in the search, the pruner or the best row)"
    )
    width = max(len(p.trial_id) for p in refs)
    for p in refs:
        kinds = [p.reference, *(e for e in p.evals if e in REFERENCE_LABELS)]
        rows = "; ".join(REFERENCE_LABELS[k] for k in kinds if k)
        seed = str(p.seed).ljust(4)
        print(f"  {p.trial_id.ljust(width)}  seed {seed}  evals {','.join(p.evals)}  -> {rows}")


def _print_table(spec: SweepSpec, plans: list[TrialPlan]) -> None:
    keys = [k for ax in spec.axes for k in ax.keys]
    print(
        f"sweep {spec.name}: {len(plans)} trials ({spec.search.kind}; backend {spec.backend.name}; evals {','.join(spec.evals)})"
    )
    width = max([len("trial_id"), *(len(p.trial_id) for p in plans)])
    print("  " + "  ".join(["trial_id".ljust(width), "seed", *keys]))
    for p in plans:
        print(
            "  "
            + "  ".join(
                [p.trial_id.ljust(width), str(p.seed).ljust(4), *[json.dumps(p.setting.get(k)) for k in keys]]
            )
        )


def _executor(spec: SweepSpec, sweep_dir: Path) -> Any:
    from orchestration.sweeps.executors import LocalExecutor, RayExecutor, SlurmExecutor

    b = spec.backend
    if b.name == "slurm":
        return SlurmExecutor(b.slurm)
    if b.name == "local":
        return LocalExecutor(b.cpus_per_trial)
    return RayExecutor(b.address, b.cpus_per_trial, b.gpus_per_trial, sweep_dir / "ray")


def _log_text_artifact(uri: str, run_id: str, name: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / name
        p.write_text(text)
        safe(tracking.log_artifact, uri, run_id, p)


class SweepRun:
    """One invocation of a sweep (fresh or resumed)."""

    def __init__(self, spec: SweepSpec, extra: dict[str, Any], req: SweepRequest) -> None:
        self.spec, self.extra, self.req = spec, extra, req
        self.workdir = req.workdir
        self.sweep_dir = (req.workdir / "sweeps" / spec.name).resolve()
        self.uri = tracking.resolve_tracking_uri(req.tracking_uri, req.workdir)
        self.state = load_state(self.sweep_dir)
        self.experiment = spec.experiment or spec.name
        self._pruner: Any = None

    # --------------------------------------------------------------- parent
    def parent(self, expected: int) -> str:
        if self.state.get("parent_run_id"):
            rid = self.state["parent_run_id"]
            tracking.set_status(self.uri, rid, "RUNNING")
            tracking.set_tags(self.uri, rid, {tags.SWEEP_STATE: "running"})
            return rid
        exp_id = tracking.get_or_create_experiment(self.uri, self.experiment)
        keys = [k for ax in self.spec.axes for k in ax.keys]
        parent_tags = {
            **tracking.run_tags_for_environment(),
            tags.SWEEP: self.spec.name,
            tags.ROLE: "sweep",
            tags.AXES: json.dumps(keys),
            tags.SEARCH: self.spec.search.kind,
            tags.SWEEP_STATE: "running",
            tags.TRIALS_EXPECTED: str(expected),
            tags.BACKEND: self.spec.backend.name,
        }
        params = {
            f"sweep.{k}": v for k, v in tracking.flatten_config(self.spec.model_dump(mode="json")).items()
        }
        rid = tracking.create_run(self.uri, exp_id, f"sweep:{self.spec.name}", params, parent_tags)
        self.state.update({"parent_run_id": rid, "name": self.spec.name, "experiment": self.experiment})
        save_state(self.sweep_dir, self.state)
        _log_text_artifact(
            self.uri, rid, "spec.yaml", yaml.safe_dump(self.spec.model_dump(mode="json"), sort_keys=False)
        )
        return rid

    # --------------------------------------------------------------- trials
    def trial_dir(self, p: TrialPlan) -> Path:
        return (self.workdir / "trials" / p.trial_id).resolve()

    def ensure_trial(self, p: TrialPlan, parent_id: str, extra_tags: dict[str, str] | None = None) -> Path:
        d = self.trial_dir(p)
        existing = TrialSpec.load(d) if TrialPaths(d).spec.exists() else None
        if existing is None or not existing.run_id:  # new, or killed before its run was recorded
            setting_cfg = dict(p.config.to_dict())
            setting_cfg.pop("seed")
            from orchestration.trial import config_hash

            trial_tags = {
                tags.ROLE: "trial",
                tags.SETTING_HASH: config_hash(setting_cfg, p.reference),
                tags.SEED: str(p.seed),
                **{f"{tags.AXIS_PREFIX}{k}": json.dumps(v) for k, v in p.setting.items()},
                **(extra_tags or {}),
            }
            prepare_trial(
                p.config,
                self.workdir,
                self.uri,
                p.trial_id,
                list(p.evals or self.spec.evals),
                self.spec.backend.name if self.spec.backend.name == "slurm" else "local",
                experiment=self.experiment,
                max_requeues=self.spec.max_requeues,
                sweep=self.spec.name,
                parent_run_id=parent_id,
                extra_tags=trial_tags,
                reference=p.reference,
            )
        else:  # the same trial from an earlier invocation: reuse its run
            self._switch_backend(existing)
        return d

    def _switch_backend(self, spec: TrialSpec) -> None:
        """Move a trial to this invocation's backend, refused while a job of its old one may run."""
        wanted = "slurm" if self.spec.backend.name == "slurm" else "local"
        if spec.backend == wanted:
            return
        if jobs_unfinished(spec):
            ids = ", ".join(j["job_id"] for j in read_jobs(spec.dir))
            raise SpecError(
                f"trial {spec.trial_id}: its {spec.backend} jobs ({ids}) have not finished; wait for them "
                f"or cancel them (mugs-orch cancel --trial {spec.trial_id}) before resuming with --backend {wanted}"
            )
        spec.backend = wanted
        spec.save()

    def pruner(self) -> Any:
        """The sweep's pruner (None without ``search.pruner``), created once per invocation."""
        if self.spec.search.pruner == "none":
            return None
        if self._pruner is None:
            from orchestration.sweeps.pruning import SweepPruner

            self._pruner = SweepPruner(self.spec.search, self.sweep_dir, self.uri, self.spec.name)
        return self._pruner

    def reference_dirs(self, parent_id: str) -> list[Path]:
        """The reference trials' directories (created with their MLflow runs when new)."""
        return [self.ensure_trial(p, parent_id) for p in reference_plans(self.spec, self.extra)]

    def run_batch(
        self, dirs: list[Path], progress: SweepProgress, references: list[Path] | None = None
    ) -> None:
        """Run ``dirs`` and the ``references`` (never shown to the pruner) to completion."""
        pruner = self.pruner()
        tick: Any = progress
        if pruner is not None:
            pruner.register(dirs)

            def tick() -> None:
                pruner.tick()
                progress()

        dirs = [*(references or []), *dirs]

        kinds = {d: classify(d) for d in dirs}
        todo = [d for d, k in kinds.items() if k in (TrialState.NEW, TrialState.STOPPED, TrialState.FAILED)]
        active = [d for d, k in kinds.items() if k.in_flight]
        skipped = sum(k in (TrialState.DONE, TrialState.PRUNED) for k in kinds.values())
        if skipped or active:
            print(
                f"[{self.spec.name}] resuming: {skipped} finished or pruned (not rerun), {len(active)} still running "
                f"(re-attached), {len(todo)} to run",
                flush=True,
            )
        ex = _executor(self.spec, self.sweep_dir)
        if self.spec.backend.name == "slurm":
            ex.run(todo, tick, active=active)
        else:
            ex.run(todo + active, tick)  # the Ray trainable attaches to a live runner
        if pruner is not None:
            pruner.tick()  # report the last values and close the settings that ended

    @contextmanager
    def ending(self, parent_id: str, dirs: list[Path]) -> Iterator[None]:
        """On any way out but the normal one (Ctrl-C, SIGTERM, an error, a failed submission):
        reconcile ``dirs`` (runs of trials that no longer run are ended, with the reason) and end
        the parent run "interrupted", then let the error go on. Trials whose jobs still run (a
        detached local runner, a SLURM job) keep their RUNNING runs: a rerun re-attaches."""
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum: int, _frame: object) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            signal.signal(signal.SIGTERM, on_term)
        try:
            yield
        except BaseException:
            print(f"[{self.spec.name}] interrupted: ending the runs of trials that no longer run", flush=True)
            try:
                self.finish(parent_id, [d for d in dirs if TrialPaths(d).spec.exists()], interrupted=True)
            except Exception as e:  # e.g. the tracking server is down: the original error matters more
                print(f"warning: could not end the runs ({type(e).__name__}: {e})", flush=True)
            raise
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)

    def _row(self, d: Path) -> dict[str, Any]:
        """The trial's trials.csv row; a run whose trial no longer runs is ended on the way."""
        from orchestration.status import end_stale_run

        spec = TrialSpec.load(d)
        state = classify(d)
        safe(end_stale_run, d, state)
        row: dict[str, Any] = {
            "trial_id": spec.trial_id,
            "config_hash": spec.config_hash,
            "seed": spec.config.get("seed"),
            "state": state.value,
            REFERENCE_COLUMN: spec.reference or "",
        }
        row.update({k: _dotted(spec.config, k) for ax in self.spec.axes for k in ax.keys})
        row.update(results(d))
        row["collapsed"] = ",".join(collapsed(d))  # from the latest logged diagnostics
        return row

    def finish(self, parent_id: str, dirs: list[Path], interrupted: bool = False) -> dict[str, Any]:
        """Reconcile every trial, write trials.csv, end the parent run (FINISHED only when every
        trial ended). ``interrupted``: the driver is leaving early (Ctrl-C, an error)."""
        failpoint("sweep:finishing")
        rows = [self._row(d) for d in dirs]
        _log_text_artifact(self.uri, parent_id, "trials.csv", trials_csv(rows))
        states = [TrialState(r["state"]) for r in rows]
        failed, pruned = states.count(TrialState.FAILED), states.count(TrialState.PRUNED)
        if all(s.ended for s in states):
            sweep_state = "finished"
        else:
            sweep_state = "interrupted" if interrupted else "partial"
        new_tags = {
            tags.SWEEP_STATE: sweep_state,
            tags.TRIALS_FAILED: str(failed),
            tags.TRIALS_PRUNED: str(pruned),
        }
        safe(tracking.set_tags, self.uri, parent_id, new_tags)
        safe(tracking.set_status, self.uri, parent_id, "FINISHED" if sweep_state == "finished" else "KILLED")
        return {"rows": rows, "failed": failed, "state": sweep_state}


def _dotted(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def validate_plan(spec: SweepSpec, plans: list[TrialPlan], refs: list[TrialPlan], spec_path: str) -> int:
    """``--validate``: every SLURM job of the sweep through ``sbatch --test-only``; nothing is
    created. Trials are grouped by their evaluations as a submission groups them (an optuna
    sweep: one batch of ``parallel`` proposals x seeds, with the references)."""
    from orchestration.backends.slurm import slurm_options
    from orchestration.backends.slurm_validate import validate_sweep

    if spec.backend.name != "slurm":
        raise SpecError(f"--validate: only with --backend slurm (the spec's backend is {spec.backend.name!r})")
    options = slurm_options(spec.backend.slurm, lambda k: f"backend.slurm.{k}")
    counts: dict[tuple[str, ...], int] = {}
    if spec.search.kind == "optuna":
        counts[tuple(spec.evals)] = (spec.search.parallel or 4) * len(spec.seeds)
    for p in [*refs, *plans]:
        key = tuple(p.evals or spec.evals)
        counts[key] = counts.get(key, 0) + 1
    return validate_sweep(options, spec.name, list(counts.items()), spec_path)


def run_sweep(req: SweepRequest) -> int:
    spec, extra = prepare_spec(req)
    plans = expand(spec, extra, req.spec_path, req.max_trials)
    refs = expand_references(spec, extra, req.spec_path)
    if req.validate:
        return validate_plan(spec, plans, refs, req.spec_path)
    if req.dry_run:
        if spec.search.kind == "optuna":
            print(
                f"sweep {spec.name}: optuna TPE, {spec.search.trials} trials x {len(spec.seeds)} seeds, "
                f"objective {spec.search.direction} {spec.search.metric}; configs are proposed as results arrive"
            )
        else:
            _print_table(spec, plans)
        _print_references(refs)
        pr = spec.search.pruning
        if spec.search.pruner != "none" and pr is not None:
            rule = (
                f"median of completed settings, after {pr.startup_trials} completed and step {pr.warmup}"
                if spec.search.pruner == "median"
                else f"ASHA rungs at {pr.min_resource or pr.every} x {pr.reduction_factor}^r steps"
            )
            print(f"pruning: {spec.search.pruner} on monitor/knn_top1 every {pr.every} steps ({rule})")
        if spec.backend.name == "slurm":
            from orchestration.sweeps.executors import SlurmExecutor

            n = len(plans) + len(refs) if plans else (spec.search.parallel or 4) * len(spec.seeds)
            for line in SlurmExecutor(spec.backend.slurm).plan(n):
                print(f"  sbatch plan: {line}")
        print("dry run: nothing submitted")
        return 0
    if spec.backend.name == "ray":  # reach the cluster before anything is created
        from orchestration.sweeps.executors import RayConnectionError, connect_ray

        try:
            connect_ray(spec.backend.address)
        except RayConnectionError as e:
            raise SpecError(str(e)) from e
    tracking.check_reachable(tracking.resolve_tracking_uri(req.tracking_uri, req.workdir))
    if spec.backend.name == "slurm":  # would slurmctld take the jobs? (nothing is created yet)
        from orchestration.backends.slurm import preflight, slurm_options

        preflight(slurm_options(spec.backend.slurm, lambda k: f"backend.slurm.{k}"))
    run = SweepRun(spec, extra, req)
    with driver_lock(run.sweep_dir):
        if spec.search.kind == "optuna":
            from orchestration.sweeps.optuna_search import run_optuna

            return run_optuna(run)
        parent_id = run.parent(len(plans))
        failpoint("sweep:after_parent")
        dirs: list[Path] = []
        with run.ending(parent_id, dirs):
            dirs += [run.ensure_trial(p, parent_id) for p in plans]
            ref_dirs = run.reference_dirs(parent_id)
            dirs[:0] = ref_dirs
            maximize = spec.search.direction == "maximize"
            progress = SweepProgress(spec.name, dirs, spec.search.metric, maximize, ref_dirs)
            run.run_batch(dirs[len(ref_dirs) :], progress, ref_dirs)
        out = run.finish(parent_id, dirs)
        summarize(spec.name, out["rows"], spec.search.metric, spec.search.direction == "maximize")
        return 0 if out["failed"] == 0 and out["state"] == "finished" else 1
