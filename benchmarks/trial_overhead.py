"""What does orchestration add to a trial? The time of ``mugs-orch train --wait`` (local
backend, the demo preset, k-NN evaluation) that is neither a training step nor the evaluation's
own work, split into phases, against a 5-minute trial.

Each repeat runs one trial of ``--steps`` steps and reads the times off what the trial leaves:

- ``submit``: the CLI's start to the MLflow run's creation (imports, config, trial directory,
  run creation) - from ``time.time()`` before the command and the run's ``start_time``;
- ``start``: run creation to the trainer being ready (runner and chain processes, their imports,
  the trainer built, data loaded) - ``pretrain_starts.log``;
- ``first step``: trainer ready to the start of step 1, extrapolated back from the first logged
  step at the median step time (``train/loss`` timestamps in MLflow);
- training (not overhead): the steps;
- ``eval start``: the last step's end to the evaluation's start (checkpoint, model load), the
  evaluation's own ``seconds`` (feature extraction, k-NN) excluded;
- ``finish``: the evaluation's end to the command's return (run finalized, the CLI's polling).

A warm-up trial first creates the MLflow store (sqlite schema, once per work directory) and is
excluded.

``--compare-agent`` also runs each repeat with the job's MLflow calls made in the job's own
process (``MUGS_TRACKING_AGENT=0``: no tracking agent), alternating which goes first, and
reports both medians.

``--sweep N`` measures the path a sweep takes instead (``mugs-orch sweep`` of one setting and N
seeds, one trial at a time: ``cpus_per_trial`` = all cores): the driver creates every run up
front, then starts each trial's runner when the previous one has ended. A trial's overhead there
is everything between the previous trial's end (its run's end time) and its own, except its
training steps and its evaluation's own work: the driver noticing the end and starting the next
runner, the runner and chain processes, the trainer built, eval start, finish. The sweep's
set-up (the parent run, every trial's run) and its reference trials (one per seed, 0 steps) are
per sweep, reported apart. Also the code snapshot a SLURM submission takes (``snapshot_code``, into a fresh directory: a
cold copy; later submissions of the same code reuse it).

    .venv/bin/python benchmarks/trial_overhead.py [--steps 200] [--repeats 3] [--compare-agent]
    .venv/bin/python benchmarks/trial_overhead.py --sweep 4 [--steps 200]

Writes ``benchmarks/results/trial_overhead.json`` (``trial_overhead_sweep.json`` with ``--sweep``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestration.jobs.tracking_calls import AGENT_ENV

REPO = Path(__file__).resolve().parents[1]
TRIAL_S = 300.0  # the yardstick: a 5-minute trial


def _times(client: Any, trial: Path) -> dict[str, float]:
    """What one finished trial left, as epoch seconds: its run's start and end, the trainer ready,
    step 1's start and the last logged step (at the median step time), the evaluation's end and
    its own work."""
    run = client.get_run((trial / "mlflow_run_id").read_text().strip())
    hist = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)
    knn = client.get_metric_history(run.info.run_id, "eval/knn_top1")[0]
    result = json.loads(next(trial.glob("eval_knn*.json")).read_text())
    gaps = [(b.timestamp - a.timestamp) / 1000 / (b.step - a.step) for a, b in zip(hist, hist[1:], strict=False)]
    step_s = statistics.median(gaps) if gaps else 0.0
    return {
        "run_start": run.info.start_time / 1000,
        "run_end": run.info.end_time / 1000,
        "ready": float((trial / "pretrain_starts.log").read_text().split()[0]),
        "first": hist[0].timestamp / 1000 - hist[0].step * step_s if hist else float("nan"),
        "last": hist[-1].timestamp / 1000 if hist else float("nan"),
        "eval_end": knn.timestamp / 1000,
        "eval_s": result["seconds"],
        "step_s": step_s,
    }


def _summary(t: dict[str, float], phases: dict[str, float], t0: float, t_end: float) -> dict[str, float]:
    return {
        **{k: round(v, 3) for k, v in phases.items()},
        "overhead_s": round(sum(phases.values()), 3),
        "training_s": round(t["last"] - t["first"], 3),
        "eval_compute_s": t["eval_s"],
        "wall_s": round(t_end - t0, 3),
        "median_step_s": round(t["step_s"], 4),
    }


def _one(wd: Path, name: str, steps: int, log_every: int, agent: bool = True) -> dict[str, float]:
    import mlflow

    cmd = [
        sys.executable, "-m", "orchestration.cli", "train", "--preset", "demo", "--set", f"train.max_steps={steps}",
        "--set", f"train.log_every={log_every}", "--evals", "knn", "--wait", "--workdir", str(wd), "--name", name,
    ]
    t0 = time.time()
    env = {**os.environ, AGENT_ENV: "1" if agent else "0"}
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1800, env=env)
    t_end = time.time()
    if p.returncode:
        raise RuntimeError(p.stdout + p.stderr)
    trial = next((wd / "trials").glob(f"{name}-*/trial.yaml")).parent
    t = _times(mlflow.MlflowClient(f"sqlite:///{wd / 'mlflow.db'}"), trial)
    phases = {
        "submit": t["run_start"] - t0,
        "start": t["ready"] - t["run_start"],
        "first_step": t["first"] - t["ready"],
        "eval_start": (t["eval_end"] - t["last"]) - t["eval_s"],
        "finish": t_end - t["eval_end"],
    }
    return _summary(t, phases, t0, t_end)


SWEEP_KEYS = ["slot_to_ready", "first_step", "eval_start", "finish", "overhead_s"]


def _sweep(wd: Path, seeds: int, steps: int, log_every: int) -> dict[str, Any]:
    """One ``mugs-orch sweep`` of ``seeds`` trials, one at a time; per-trial phases (module docstring)."""
    import mlflow
    import yaml

    spec = {
        "name": "overhead",
        "axes": [{"key": "train.max_steps", "values": [steps]}],
        "seeds": list(range(seeds)),
        "evals": ["knn"],
        "backend": {"name": "local", "cpus_per_trial": os.cpu_count() or 1},
        "base": {"preset": "demo", "overrides": {"train.log_every": log_every}},
    }
    wd.mkdir(parents=True, exist_ok=True)
    (wd / "overhead.yaml").write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "orchestration.cli", "sweep", str(wd / "overhead.yaml"), "--workdir", str(wd)]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=3600)
    t_end = time.time()
    if p.returncode:
        raise RuntimeError(p.stdout + p.stderr)
    client = mlflow.MlflowClient(f"sqlite:///{wd / 'mlflow.db'}")
    trials = []
    for d in (wd / "trials").iterdir():
        ref = yaml.safe_load((d / "trial.yaml").read_text()).get("reference")
        trials.append((_times(client, d), bool(ref)))
    trials.sort(key=lambda x: x[0]["run_end"])
    prev_end = min(t["run_start"] for t, _ in trials)  # the runs exist before any trial starts
    out: dict[str, Any] = {"setup_s": round(prev_end - t0, 3), "trials": [], "references": []}
    for t, ref in trials:
        phases = {
            "slot_to_ready": t["ready"] - prev_end,
            "first_step": (t["first"] - t["ready"]) if not ref else 0.0,
            "eval_start": ((t["eval_end"] - t["last"]) if not ref else (t["eval_end"] - t["ready"])) - t["eval_s"],
            "finish": t["run_end"] - t["eval_end"],
        }
        out["references" if ref else "trials"].append(_summary(t, phases, prev_end, t["run_end"]))
        prev_end = t["run_end"]
    out["after_last_s"] = round(t_end - prev_end, 3)  # the sweep's summary and exit
    return out


def _sweep_main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="mugs-overhead-") as tmp:  # a new store: its schema is set-up
        res = _sweep(Path(tmp) / "runs", args.sweep, args.steps, args.log_every)
    med = {k: statistics.median(r[k] for r in res["trials"]) for k in SWEEP_KEYS}
    n_all = len(res["trials"]) + len(res["references"])
    report = {
        "benchmark": "trial_overhead",
        "mode": "sweep",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "command": f"mugs-orch sweep (demo preset, train.max_steps={args.steps}, {args.sweep} seeds, knn, local, one trial at a time)",
        "steps": args.steps,
        **res,
        "median": med,
        "overhead_fraction_of_5_min_trial": round(med["overhead_s"] / TRIAL_S, 4),
        # the set-up (parent run, every trial's run, the store's schema) shared out over all trials
        "overhead_with_setup_share_s": round(med["overhead_s"] + res["setup_s"] / n_all, 3),
        "overhead_with_setup_share_fraction": round((med["overhead_s"] + res["setup_s"] / n_all) / TRIAL_S, 4),
        "note": "phases are defined in the module docstring; training steps and the evaluation's own work are excluded",
    }
    out = args.out or str(REPO / "benchmarks" / "results" / "trial_overhead_sweep.json")
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    for k in SWEEP_KEYS:
        print(f"  {k:13s} median {med[k]:7.2f} s   ({', '.join(f'{r[k]:.2f}' for r in res['trials'])})")
    print(f"  overhead / 5-minute trial: {report['overhead_fraction_of_5_min_trial']:.1%} "
          f"({report['overhead_with_setup_share_fraction']:.1%} with a share of the set-up); sweep set-up "
          f"{res['setup_s']} s; reference trials {[r['overhead_s'] for r in res['references']]} s")
    print(f"wrote {out}")
    return 0


def _snapshot_s() -> float:
    sys.path.insert(0, str(REPO))
    from orchestration.snapshot import snapshot_code

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        snapshot_code(Path(tmp) / "snapshots")
        return round(time.perf_counter() - t, 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sweep", type=int, default=0, metavar="N", help="measure a sweep of N seeds instead")
    ap.add_argument(
        "--compare-agent",
        action="store_true",
        help="also run each repeat without the tracking agent (MUGS_TRACKING_AGENT=0), alternating",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    if args.sweep:
        return _sweep_main(args)
    args.out = args.out or str(REPO / "benchmarks" / "results" / "trial_overhead.json")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mugs-overhead-") as tmp:
        wd = Path(tmp) / "runs"
        warm = _one(wd, "warmup", args.steps, args.log_every)  # creates the store: not per trial
        print(f"[warm-up, excluded: a new MLflow store] {warm}", file=sys.stderr, flush=True)
        without: list[dict[str, Any]] = []
        for i in range(args.repeats):
            pair = [True, False] if i % 2 == 0 else [False, True]  # alternate who goes first
            for agent in pair if args.compare_agent else [True]:
                res = _one(wd, f"trial{i}{'a' if agent else 'n'}", args.steps, args.log_every, agent)
                (runs if agent else without).append(res)
                print(f"[{i + 1}/{args.repeats} agent={agent}] {res}", file=sys.stderr, flush=True)
    keys = ["submit", "start", "first_step", "eval_start", "finish", "overhead_s", "training_s", "wall_s"]
    med = {k: statistics.median(r[k] for r in runs) for k in keys}
    report = {
        "benchmark": "trial_overhead",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "command": "mugs-orch train --preset demo --set train.max_steps=N --evals knn --wait (local backend, sqlite store)",
        "steps": args.steps,
        "runs": runs,
        "warmup_excluded": warm,
        "median": med,
        **(_without_agent(without, keys) if without else {}),
        "overhead_fraction_of_5_min_trial": round(med["overhead_s"] / TRIAL_S, 4),
        "snapshot_cold_s": _snapshot_s(),
        "note": "phases are defined in the module docstring; training steps and the evaluation's own work are excluded",
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for k in keys:
        print(f"  {k:12s} median {med[k]:7.2f} s   ({', '.join(f'{r[k]:.2f}' for r in runs)})")
    print(f"  overhead / 5-minute trial: {report['overhead_fraction_of_5_min_trial']:.1%}; "
          f"snapshot (SLURM, cold) {report['snapshot_cold_s']} s")
    print(f"wrote {args.out}")
    return 0


def _without_agent(runs: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """The same trials with the job's MLflow calls made in its own process (no tracking agent)."""
    med = {k: statistics.median(r[k] for r in runs) for k in keys}
    for k in keys:
        print(f"  without agent: {k:12s} median {med[k]:7.2f} s")
    return {"runs_without_agent": runs, "median_without_agent": med}


if __name__ == "__main__":
    raise SystemExit(main())
