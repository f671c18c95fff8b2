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
excluded. Also the code snapshot a SLURM submission takes (``snapshot_code``, into a fresh directory: a
cold copy; later submissions of the same code reuse it).

    .venv/bin/python benchmarks/trial_overhead.py [--steps 200] [--repeats 3]

Writes ``benchmarks/results/trial_overhead.json``.
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

REPO = Path(__file__).resolve().parents[1]
TRIAL_S = 300.0  # the yardstick: a 5-minute trial


def _one(wd: Path, name: str, steps: int, log_every: int) -> dict[str, float]:
    import mlflow

    cmd = [
        sys.executable, "-m", "orchestration.cli", "train", "--preset", "demo", "--set", f"train.max_steps={steps}",
        "--set", f"train.log_every={log_every}", "--evals", "knn", "--wait", "--workdir", str(wd), "--name", name,
    ]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1800)
    t_end = time.time()
    if p.returncode:
        raise RuntimeError(p.stdout + p.stderr)
    trial = next((wd / "trials").glob(f"{name}-*/trial.yaml")).parent
    client = mlflow.MlflowClient(f"sqlite:///{wd / 'mlflow.db'}")
    run = client.get_run((trial / "mlflow_run_id").read_text().strip())
    hist = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)
    ready = float((trial / "pretrain_starts.log").read_text().split()[0])
    knn = client.get_metric_history(run.info.run_id, "eval/knn_top1")[0]
    result = json.loads(next(trial.glob("eval_knn*.json")).read_text())
    gaps = [(b.timestamp - a.timestamp) / 1000 / (b.step - a.step) for a, b in zip(hist, hist[1:], strict=False)]
    step_s = statistics.median(gaps)
    t_first = hist[0].timestamp / 1000 - hist[0].step * step_s  # step 1 starts here
    t_last = hist[-1].timestamp / 1000
    t_eval_end = knn.timestamp / 1000
    phases = {
        "submit": run.info.start_time / 1000 - t0,
        "start": ready - run.info.start_time / 1000,
        "first_step": t_first - ready,
        "eval_start": (t_eval_end - t_last) - result["seconds"],
        "finish": t_end - t_eval_end,
    }
    return {
        **{k: round(v, 3) for k, v in phases.items()},
        "overhead_s": round(sum(phases.values()), 3),
        "training_s": round(t_last - t_first, 3),
        "eval_compute_s": result["seconds"],
        "wall_s": round(t_end - t0, 3),
        "median_step_s": round(step_s, 4),
    }


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
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "trial_overhead.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mugs-overhead-") as tmp:
        wd = Path(tmp) / "runs"
        warm = _one(wd, "warmup", args.steps, args.log_every)  # creates the store: not per trial
        print(f"[warm-up, excluded: a new MLflow store] {warm}", file=sys.stderr, flush=True)
        for i in range(args.repeats):
            runs.append(_one(wd, f"trial{i}", args.steps, args.log_every))
            print(f"[{i + 1}/{args.repeats}] {runs[-1]}", file=sys.stderr, flush=True)
    keys = ["submit", "start", "first_step", "eval_start", "finish", "overhead_s"]
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


if __name__ == "__main__":
    raise SystemExit(main())
