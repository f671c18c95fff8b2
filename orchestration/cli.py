"""``mugs-orch``: the command line of the orchestration layer."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mugs import __version__
from mugs.config import ConfigError
from mugs.strict_yaml import YamlInputError, read_yaml_file
from orchestration.backends.slurm import SlurmInputError, check_name, slurm_options
from orchestration.sweeps.spec import SpecError

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input: reported with exit code 2, nothing submitted or created."""


DEFAULT_MAX_TRIALS = 10_000  # a sweep planning more is a typo (a step of 1e-6), not a plan


def _global_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    p.add_argument(
        "--tracking-uri",
        default=d,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite under the work dir)",
    )
    p.add_argument("--workdir", default=d if suppress else "runs", help="work directory (default: ./runs)")


def _slurm_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SLURM (with --backend slurm)")
    g.add_argument("--cluster-profile", help="cluster profile YAML with any of the options below")
    g.add_argument("--partition")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--gpus", type=int, help="GPUs per node (one task per GPU)")
    g.add_argument("--cpus", type=int, help="CPUs per task")
    g.add_argument("--mem", type=float, help="memory per node, GB")
    g.add_argument("--time", type=int, help="time limit, minutes")
    g.add_argument("--nodes", type=int)
    g.add_argument("--tasks-per-node", type=int)
    g.add_argument("--constraint")
    g.add_argument(
        "--signal-delay", type=int, help="seconds before the time limit to signal a checkpoint (USR2)"
    )
    g.add_argument(
        "--validate",
        action="store_true",
        help="show every job of the plan to slurmctld (sbatch --test-only) and print its answers; "
        "nothing is queued or created; exit 2 if any is refused",
    )


SLURM_KEYS = {
    "partition": "partition",
    "account": "account",
    "qos": "qos",
    "gpus": "gpus",
    "cpus": "cpus",
    "mem": "mem",
    "time": "time",
    "nodes": "nodes",
    "tasks_per_node": "tasks_per_node",
    "constraint": "constraint",
    "signal_delay": "signal_delay_s",
}


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="pretrain one trial, then evaluate it (a job chain)")
    _global_options(t, suppress=True)
    t.add_argument("config", nargs="?", help="YAML config file (layered over --preset)")
    t.add_argument("--preset", help="named recipe (mugs-orch presets)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--backend", default="local", help="local | slurm")
    t.add_argument("--wait", action="store_true", help="block until the chain ends")
    t.add_argument("--evals", default="knn", help="comma list of knn,linear ('' for none)")
    t.add_argument("--name", type=_trial_name, help="trial name prefix (letters, digits, _.-)")
    t.add_argument("--experiment", default="mugs", help="MLflow experiment")
    t.add_argument("--max-requeues", type=int, default=3)
    _slurm_options(t)


def _add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("sweep", help="run (or resume) a sweep from a YAML spec")
    _global_options(w, suppress=True)
    w.add_argument("spec", help="sweep spec YAML (see sweeps/)")
    w.add_argument("--backend", help="local | ray | slurm (overrides the spec)")
    w.add_argument("--address", help="Ray cluster address (with --backend ray)")
    w.add_argument("--profile", help="scale profile from the spec (e.g. demo, cifar10, paper)")
    w.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a base config key for every trial",
    )
    w.add_argument(
        "--dry-run", action="store_true", help="print the trial table (and sbatch plan); submit nothing"
    )
    w.add_argument(
        "--max-trials",
        type=int,
        default=DEFAULT_MAX_TRIALS,
        metavar="N",
        help=f"refuse a sweep that plans more trials than this (default {DEFAULT_MAX_TRIALS})",
    )
    _slurm_options(w)


def _add_trial_parsers(sub: argparse._SubParsersAction) -> None:
    """status, cancel, ui, sync: commands on trials and the store."""
    s = sub.add_parser("status", help="jobs and states of trials")
    _global_options(s, suppress=True)
    s.add_argument("trial", nargs="?")

    c = sub.add_parser("cancel", help="cancel a trial's jobs")
    _global_options(c, suppress=True)
    c.add_argument("trial")

    u = sub.add_parser("ui", help="MLflow UI on the configured store")
    _global_options(u, suppress=True)
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=5000)

    y = sub.add_parser("sync", help="deliver metrics buffered while MLflow was unreachable")
    _global_options(y, suppress=True)
    y.add_argument("trial", nargs="?")


def build_parser() -> argparse.ArgumentParser:
    """The ``mugs-orch`` parser; each command registers its own sub-parser."""
    from reports.cli import add_report_parser

    p = argparse.ArgumentParser(
        prog="mugs-orch",
        description="Orchestrate Mugs self-supervised pretraining: train, evaluate, track, report.",
    )
    p.add_argument("--version", action="version", version=f"mugs-orch {__version__}")
    _global_options(p, suppress=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add_train_parser(sub)
    _add_sweep_parser(sub)
    _add_trial_parsers(sub)
    add_report_parser(sub)
    sub.add_parser("presets", help="list the trainer's named recipes")
    return p


SLURM_FLAGS = {key: "--" + cli.replace("_", "-") for cli, key in SLURM_KEYS.items()}  # field -> flag


def _trial_name(value: str) -> str:
    """``--name``: one safe word (it becomes a directory under <workdir>/trials and a job name)."""
    try:
        return check_name(value, "--name")
    except SlurmInputError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--name: ")) from None


def _cluster_profile(path: Path) -> dict:
    """The SLURM options of a cluster profile, validated (errors name the file and the key)."""
    if not path.is_file():
        raise UsageError(f"--cluster-profile {path}: not found")
    try:
        data = read_yaml_file(path) or {}  # UTF-8, no duplicated key, no NaN
    except YamlInputError as e:
        raise UsageError(f"--cluster-profile {e}") from e
    if not isinstance(data, dict):
        raise UsageError(f"--cluster-profile {path}: top level must be a mapping")
    opts: dict = {}
    names: dict[str, str] = {}
    for k, v in data.items():
        key = str(k).replace("-", "_")
        if key not in SLURM_KEYS:
            raise UsageError(
                f"--cluster-profile {path}: unknown key {k!r} (known: {', '.join(sorted(SLURM_KEYS))})"
            )
        opts[SLURM_KEYS[key]], names[SLURM_KEYS[key]] = v, str(k)
    slurm_options(opts, lambda f: f"--cluster-profile {path}: {names.get(f, f)}")
    return opts


def _slurm_options_from(args: argparse.Namespace) -> dict:
    """--cluster-profile, then the flags (which win); each source is validated on its own, so an
    error names the flag or the profile's key (SlurmInputError: exit 2)."""
    opts: dict = {}
    if getattr(args, "cluster_profile", None):
        opts.update(_cluster_profile(Path(args.cluster_profile)))
    flags = {
        key: getattr(args, cli) for cli, key in SLURM_KEYS.items() if getattr(args, cli, None) is not None
    }
    slurm_options(flags, lambda f: SLURM_FLAGS.get(f, f))
    opts.update(flags)
    return opts


def cmd_train(args: argparse.Namespace) -> int:
    from mugs.config import build_config, load_yaml_file
    from orchestration import tracking
    from orchestration.backends import BACKENDS, get_backend
    from orchestration.submit import absolutize_paths, new_trial_id, prepare_trial, submit_trial
    from orchestration.trial import EVAL_PROTOCOLS

    if args.backend not in BACKENDS:
        raise UsageError(f"--backend: unknown backend {args.backend!r} (known: {', '.join(BACKENDS)})")
    if not args.preset and not args.config:
        raise UsageError("give --preset NAME or a CONFIG.yaml")
    evals = [e for e in args.evals.split(",") if e]
    bad = [e for e in evals if e not in EVAL_PROTOCOLS]
    if bad:
        raise UsageError(f"--evals: unknown protocol(s) {bad} (known: {', '.join(EVAL_PROTOCOLS)})")
    if args.max_requeues < 0:
        raise UsageError("--max-requeues must be >= 0")
    file_values = load_yaml_file(args.config) if args.config else None
    cfg = build_config(args.preset, file_values, args.overrides)
    absolutize_paths(cfg)
    slurm_opts = _slurm_options_from(args) if args.backend == "slurm" else {}
    try:
        backend = get_backend(args.backend, **slurm_opts)
    except TypeError as e:
        raise UsageError(f"SLURM options: {e}") from e
    trial_id = new_trial_id(cfg, args.name)
    if args.validate:
        if args.backend != "slurm":
            raise UsageError("--validate: only with --backend slurm")
        from orchestration.backends.slurm_validate import validate_train

        return validate_train(backend.o, trial_id, evals)
    workdir = Path(args.workdir)
    uri = tracking.resolve_tracking_uri(args.tracking_uri, workdir)
    tracking.check_reachable(uri)  # before the trial directory exists
    if args.backend == "slurm":
        from orchestration.backends.slurm import preflight

        preflight(backend.o)  # would slurmctld take the job? nothing is queued
    spec = prepare_trial(cfg, workdir, uri, trial_id, evals, args.backend, args.experiment, args.max_requeues)
    print(
        f"trial {trial_id}\n  dir    {spec.trial_dir}\n  mlflow {tracking.redact_uri(uri)} run {spec.run_id}",
        flush=True,
    )
    jobs = submit_trial(spec, backend, wait=args.wait)
    _print_jobs(jobs)
    if args.wait:
        from orchestration.jobs.tracking_calls import safe
        from orchestration.status import end_stale_run

        safe(end_stale_run, spec.dir)  # a job that died without a word: its run ends with the reason
        return 0 if all(j["state"] == "COMPLETED" for j in jobs) else 1
    return 0


def _print_jobs(jobs: list[dict]) -> None:
    for j in jobs:
        name = j["kind"] if j["kind"] == "pretrain" else f"eval:{j['protocol']}"
        print(f"  {name:12s} {j['job_id']:>16s}  {j['state']:<10s} {j.get('exit_code', '')}")


def _trial_dirs(workdir: Path, trial: str | None) -> list[Path]:
    root = workdir / "trials"
    if trial:
        d = root / trial
        if not (d / "trial.yaml").is_file():
            raise UsageError(f"no trial {trial!r} under {root}")
        return [d]
    return sorted(p for p in root.glob("*") if (p / "trial.yaml").is_file()) if root.is_dir() else []


def cmd_status(args: argparse.Namespace) -> int:
    from orchestration.status import trial_status

    dirs = _trial_dirs(Path(args.workdir), args.trial)
    if not dirs:
        print(f"no trials under {Path(args.workdir) / 'trials'}")
    for d in dirs:
        st = trial_status(d)
        flag = f"  {st['collapse']}" if st["collapse"] else ""
        print(f"{st['trial_id']}  [{st['backend']}]  mlflow run {st['run_id']} {st['run_status']}{flag}")
        _print_jobs(st["jobs"])
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from orchestration.status import cancel_trial
    from orchestration.trial import file_state

    for d in _trial_dirs(Path(args.workdir), args.trial):
        if cancel_trial(d):
            print(f"cancelled {d.name}")
        else:
            print(f"{d.name}: already ended ({file_state(d).value}); nothing to cancel")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from orchestration import tracking
    from orchestration.jobs.tracking_calls import finalize_run
    from orchestration.trial import TrialSpec

    for d in _trial_dirs(Path(args.workdir), args.trial):
        spec = TrialSpec.load(d)
        if spec.run_id:
            n = tracking.sync_spool(spec.tracking_uri, spec.run_id, spec.paths.spool)
            status = finalize_run(spec)
            print(f"{d.name}: delivered {n} buffered metric values; run {status or 'in progress'}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from orchestration import tracking

    uri = tracking.resolve_tracking_uri(args.tracking_uri, Path(args.workdir))
    if uri.startswith(("http://", "https://")):
        print(f"the tracking server already serves the UI: {uri}")
        return 0
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow), "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    print(f"MLflow UI on http://{args.host}:{args.port} (store {uri}); Ctrl-C to stop", flush=True)
    return subprocess.call(cmd, env={**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false"})


def cmd_sweep(args: argparse.Namespace) -> int:
    from orchestration.sweeps.driver import SweepRequest, run_sweep

    slurm = _slurm_options_from(args)
    req = SweepRequest(
        spec_path=args.spec,
        workdir=Path(args.workdir),
        tracking_uri=args.tracking_uri,
        backend=args.backend,
        address=args.address,
        profile=args.profile,
        sets=args.overrides,
        slurm=slurm,
        dry_run=args.dry_run,
        validate=args.validate,
        max_trials=args.max_trials,
    )
    return run_sweep(req)


def cmd_report(args: argparse.Namespace) -> int:
    from reports.cli import cmd_report as compile_report

    return compile_report(args)


COMMANDS = {
    "report": cmd_report,
    "sweep": cmd_sweep,
    "train": cmd_train,
    "status": cmd_status,
    "cancel": cmd_cancel,
    "ui": cmd_ui,
    "sync": cmd_sync,
}


def main(argv: Sequence[str] | None = None, *, fast_exit_after_train: bool = False) -> int:
    """Run one command; ``fast_exit_after_train`` (the console script) ends the process right
    after ``train`` without the interpreter's teardown (:mod:`orchestration.process_exit`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "presets":
        from mugs.presets import list_presets

        print("\n".join(list_presets()))
        return 0
    from mugs.strict_yaml import YamlInputError
    from orchestration.sweeps.state import SweepLocked
    from orchestration.tracking.uri import TrackingUnreachable, redact_uri

    try:
        rc = COMMANDS[args.command](args)
    except (UsageError, ConfigError, SpecError, SweepLocked, TrackingUnreachable, YamlInputError) as e:
        print(f"mugs-orch {args.command}: error: {redact_uri(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    if fast_exit_after_train and args.command == "train":  # local or SLURM: nothing to stop at exit
        from orchestration.process_exit import fast_exit

        fast_exit(rc)
    return rc


def run() -> None:
    """The ``mugs-orch`` console script."""
    sys.exit(main(fast_exit_after_train=True))


if __name__ == "__main__":
    run()
