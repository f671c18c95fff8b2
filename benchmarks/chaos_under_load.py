"""The lifecycle chaos tests, run N times while a load generator keeps every core busy.

    .venv/bin/python benchmarks/chaos_under_load.py [--runs 5] [--tests NODEID ...] [--out PATH]

Each run executes the chosen tests (default: the SIGKILLed-driver sweep and the SLURM job killed
outside its task; the latter needs root for the local cluster, as the test suite does) with one
busy-looping process per core started beside them, at the same priority. Prints one line per run
and writes the pass count, per-run wall times and outcomes as JSON (default
``benchmarks/results/chaos_under_load.json``). Races that only show on a loaded machine fail
here; a clean N/N is the claim.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mugs.atomic import atomic_write_text  # noqa: E402

DEFAULT_TESTS = [
    "tests/test_trial_lifecycle.py::test_driver_killed_at_every_stage_resumes_without_holes",
    "tests/test_trial_lifecycle.py::test_a_job_killed_by_a_signal_is_recorded",
    "tests/test_jobs_slurm.py::test_job_killed_outside_the_task_ends_its_run_with_the_reason",
]


def _spin(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x = (x * 1103515245 + 12345) % 2147483648


def run_once(tests: list[str], timeout_s: float) -> dict:
    hogs = [
        mp.Process(target=_spin, args=(time.time() + timeout_s,), daemon=True)
        for _ in range(os.cpu_count() or 1)
    ]
    for h in hogs:
        h.start()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-3000:]
        summary = (proc.stdout.strip().splitlines() or [""])[-1]  # pytest's "N passed, M skipped"
    except subprocess.TimeoutExpired as e:
        rc, tail = 124, f"timed out after {timeout_s:.0f}s: {str(e.stdout)[-2000:]}"
        summary = ""
    finally:
        for h in hogs:
            h.terminate()
    # A skipped test (no root for the local cluster, say) exits 0 but proves nothing.
    skipped = " skipped" in summary
    passed = rc == 0 and not skipped
    return {"rc": rc, "passed": passed, "skipped": skipped,
            "seconds": round(time.perf_counter() - t0, 1), "tail": tail}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--tests", nargs="+", default=DEFAULT_TESTS)
    p.add_argument("--timeout", type=float, default=2400.0, help="seconds per run")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "chaos_under_load.json"))
    a = p.parse_args()
    results = []
    for i in range(a.runs):
        r = run_once(a.tests, a.timeout)
        results.append(r)
        verdict = "passed" if r["passed"] else ("SKIPPED" if r["skipped"] else f"FAILED (rc {r['rc']})")
        print(f"run {i + 1}/{a.runs}: {verdict} in {r['seconds']:.0f} s", flush=True)
        if not r["passed"]:
            print(r["tail"], flush=True)
    passed = sum(r["passed"] for r in results)
    summary = {
        "tests": a.tests,
        "load": f"{os.cpu_count()} busy-looping processes, same priority",
        "runs": a.runs,
        "passed": passed,
        "median_seconds": statistics.median(r["seconds"] for r in results),
        "results": [{k: v for k, v in r.items() if k != "tail" or not r["passed"]} for r in results],
        "command": " ".join(sys.argv),
    }
    atomic_write_text(Path(a.out), json.dumps(summary, indent=1) + "\n")
    print(f"{passed}/{a.runs} passed under load; JSON in {a.out}")
    return 0 if passed == a.runs else 1


if __name__ == "__main__":
    sys.exit(main())
