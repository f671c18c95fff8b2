"""Run a batch of prepared trials to completion on a backend.

- ``RayExecutor``: Ray Tune on this machine (``address=None``) or on an existing Ray cluster;
  concurrency from the CPUs/GPUs Ray sees. Each Tune trial drives the trial's local runner
  (a separate process session), so a killed orchestrator leaves trials running, to be
  re-attached, not duplicated.
- ``SlurmExecutor``: pretraining as job arrays (split to MaxArraySize), each evaluation as an
  array with ``aftercorr`` dependencies; active trials are re-attached by job id.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestration.backends.base import TERMINAL
from orchestration.failpoints import failpoint
from orchestration.sweeps.trial_state import classify, results
from orchestration.trial import (
    TrialPaths,
    TrialSpec,
    TrialState,
    chain_records,
    claim_record,
    read_jobs,
    write_jobs,
)

Progress = Callable[[], None]


def start_local_runner(trial_dir: Path, threads: int | None = None) -> subprocess.Popen | None:
    """(Re)start a trial's local runner unless one is alive; ``threads`` caps its torch threads.
    The runner's process if this call started it, else None (one was alive: attach to it)."""
    from orchestration.backends.local import LocalBackend, RunnerBusy, runner_alive

    if runner_alive(trial_dir):
        return None
    spec = TrialSpec.load(trial_dir)
    for marker in (spec.paths.failed, spec.paths.cancelled, spec.paths.cancel_request):
        marker.unlink(missing_ok=True)  # a retry starts clean; checkpoints are kept
    try:
        return LocalBackend(threads=threads).start(spec)
    except RunnerBusy:  # started meanwhile by another driver: attach to it
        return None


def wait_for_an_exit(procs: list[subprocess.Popen], timeout_s: float, tick_s: float = 0.05) -> bool:
    """Wait up to ``timeout_s`` for one of ``procs`` to end (reaping it); whether one did. The
    driver starts the next trial as soon as a runner it started ends, not at its next poll."""
    deadline = time.monotonic() + timeout_s
    while True:
        if any(p.poll() is not None for p in procs):
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(tick_s, left))


def wait_local(trial_dir: Path, poll_s: float = 2.0) -> TrialState:
    from orchestration.backends.local import runner_alive

    while runner_alive(trial_dir):
        time.sleep(poll_s)
    return classify(trial_dir)


def _record_placement(trial_dir: Path) -> None:
    """Where Ray placed the trial (cluster, node, host), appended to ``ray_placement.jsonl``."""
    import json

    import ray

    ctx = ray.get_runtime_context()
    rec = {
        "time": round(time.time(), 3),
        "gcs_address": ctx.gcs_address,
        "node_id": ctx.get_node_id(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    with open(trial_dir / "ray_placement.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")


def _trainable(config: dict[str, Any]) -> None:
    from ray import tune

    trial_dir = Path(config["trial_dir"])
    _record_placement(trial_dir)
    start_local_runner(trial_dir, threads=max(1, int(config.get("cpus", 1))))
    state = wait_local(trial_dir)
    tune.report({"state": state, **results(trial_dir)})


class LocalExecutor:
    """Trials on this machine, no scheduler in between: at most ``cpus // cpus_per_trial`` runners
    at once, each capped at ``cpus_per_trial`` torch threads. Runners are detached processes, so a
    killed driver leaves them running; a rerun re-attaches to the live ones (they count against
    the limit) and starts the rest."""

    def __init__(self, cpus_per_trial: float, poll_s: float = 1.0) -> None:
        self.threads = max(1, int(cpus_per_trial))
        self.parallel = max(1, (os.cpu_count() or 1) // self.threads)
        self.poll_s = poll_s

    def run(self, trial_dirs: list[Path], progress: Progress) -> None:
        from orchestration.backends.local import runner_alive

        queue = [d for d in trial_dirs if not runner_alive(d)]
        running = [d for d in trial_dirs if d not in queue]  # live runners of a killed driver
        procs: dict[Path, subprocess.Popen] = {}  # the runners this driver started
        while queue or running:
            running = [d for d in running if runner_alive(d)]
            procs = {d: p for d, p in procs.items() if d in running and p.poll() is None}
            while queue and len(running) < self.parallel:
                d = queue.pop(0)
                proc = start_local_runner(d, threads=self.threads)
                if proc is not None:
                    procs[d] = proc
                running.append(d)
            progress()
            if running:  # re-attached runners are seen at the poll; ours as soon as they end
                wait_for_an_exit(list(procs.values()), self.poll_s)


class RayConnectionError(RuntimeError):
    """The Ray cluster named by ``--address`` cannot be reached (or refuses this client)."""


def connect_ray(address: str | None) -> None:
    """Connect this process to Ray once: the cluster at ``address``, or a private local one."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():
        return
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if not address:  # "local": a private instance, never a cluster this machine happens to run
        ray.init(address="local", num_cpus=os.cpu_count(), **kw)
        return
    host, _, port = address.rpartition(":")
    try:  # Ray retries an address where nothing listens for minutes; ask the socket first
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=10).close()
    except (OSError, ValueError) as e:
        raise RayConnectionError(
            f"--address {address}: nothing answers there ({type(e).__name__}: {e}); "
            "start the cluster with `ray start --head --port PORT` and pass HOST:PORT"
        ) from e
    try:
        ray.init(address=address, **kw)
    except Exception as e:  # ConnectionError, AuthenticationError, timeouts
        raise RayConnectionError(
            f"--address {address}: cannot connect to the Ray cluster ({type(e).__name__}: {str(e)[:300]}). "
            "Is `ray start --head --port PORT` running there? A cluster with token authentication "
            "needs RAY_AUTH_MODE=token and its token (~/.ray/auth_token or RAY_AUTH_TOKEN_PATH) here too."
        ) from e


class RayExecutor:
    def __init__(
        self, address: str | None, cpus_per_trial: float, gpus_per_trial: float, storage: Path
    ) -> None:
        self.address, self.cpus, self.gpus, self.storage = address, cpus_per_trial, gpus_per_trial, storage

    def run(self, trial_dirs: list[Path], progress: Progress) -> None:
        if not trial_dirs:
            return
        from ray import tune

        connect_ray(self.address)
        tuner = tune.Tuner(
            tune.with_resources(_trainable, {"cpu": self.cpus, "gpu": self.gpus}),
            param_space={"trial_dir": tune.grid_search([str(d) for d in trial_dirs]), "cpus": self.cpus},
            tune_config=tune.TuneConfig(num_samples=1),
            run_config=tune.RunConfig(
                name=f"batch-{int(time.time())}",
                storage_path=str(self.storage),
                verbose=0,
                callbacks=[_progress_callback(progress)],
            ),
        )
        tuner.fit()


def _progress_callback(progress: Progress) -> Any:
    """A Ray Tune callback that redraws the sweep's progress at most every 2 s."""
    from ray.tune import Callback

    class _Cb(Callback):
        def __init__(self) -> None:
            self._last = 0.0

        def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
            if time.time() - self._last > 2.0:
                self._last = time.time()
                progress()

    return _Cb()


class SlurmExecutor:
    def __init__(self, options: dict[str, Any]) -> None:
        from orchestration.backends.slurm import SlurmOptions

        self.options = SlurmOptions(**options)

    def plan(self, n: int) -> list[str]:
        """The sbatch plan for ``n`` trials (for --dry-run)."""
        from orchestration.backends.slurm import max_array_size, split_for_arrays

        o = self.options
        try:
            limit = max_array_size()
        except (OSError, subprocess.SubprocessError):
            limit = 1001
        chunks = split_for_arrays(n, limit)
        tasks = o.tasks_per_node or max(o.gpus, 1)
        res = f"--nodes={o.nodes} --ntasks-per-node={tasks} --cpus-per-task={o.cpus} --time={o.time}" + (
            f" --gpus-per-node={o.gpus}" if o.gpus else ""
        )
        if o.partition:
            res += f" --partition={o.partition}"
        lines = [
            f"pretrain: {len(chunks)} array job(s) of {[len(c) for c in chunks]} tasks (MaxArraySize {limit}); {res}"
        ]
        lines.append(
            "eval: one array per protocol per chunk, --dependency=aftercorr:<pretrain array> --kill-on-invalid-dep=yes"
        )
        return lines

    def submit(self, trial_dirs: list[Path]) -> None:
        from orchestration.backends.slurm import SlurmBackend, max_array_size, split_for_arrays
        from orchestration.snapshot import snapshot_code

        if not trial_dirs:
            return
        backend = SlurmBackend(self.options)
        specs = [TrialSpec.load(d) for d in trial_dirs]
        snapshot = snapshot_code(specs[0].dir.parent.parent / "snapshots")
        logs = (specs[0].dir.parent.parent / "sweeps" / str(specs[0].sweep) / "slurm" / "%j").resolve()
        groups: dict[tuple[str, ...], list[TrialSpec]] = {}
        for s in specs:  # one array per evaluation list: aftercorr pairs task i with task i
            groups.setdefault(tuple(s.evals), []).append(s)
        for group in groups.values():
            for chunk in split_for_arrays(len(group), max_array_size()):
                self._submit_array(backend, [group[i] for i in chunk], snapshot, logs)

    def _submit_array(self, backend: Any, batch: list[TrialSpec], snapshot: Path, logs: Path) -> None:
        """Pretraining of ``batch`` as one array, each of its evaluations as an aftercorr array."""
        from orchestration.backends.slurm import check_name
        from orchestration.jobs import EvalTask, PretrainTask

        sweep = check_name(str(batch[0].sweep), "sweep name")  # checked again in _executor
        job_name = f"mugs-sweep-{sweep}-{uuid.uuid4().hex[:8]}"  # unique: a rerun finds the jobs by it
        for i, s in enumerate(batch):  # the claim, recorded before sbatch
            write_jobs(s.dir, [claim_record(job_name, i)])
        ex = backend._executor(snapshot, job_name, logs)
        ex.update_parameters(slurm_array_parallelism=len(batch))
        with ex.batch():
            pre_jobs = [ex.submit(PretrainTask(s)) for s in batch]
        array_id = str(pre_jobs[0].job_id).split("_")[0]
        eval_jobs: dict[str, list[Any]] = {}
        protocols = sorted({p for s in batch for p in s.evals})
        for p in protocols:
            ev = backend._executor(snapshot, f"{job_name}-{p}", logs, after=array_id, dependency="aftercorr")
            ev.update_parameters(slurm_array_parallelism=len(batch))
            with ev.batch():
                eval_jobs[p] = [ev.submit(EvalTask(s, p)) for s in batch]
        failpoint("slurm:submitted")
        for i, s in enumerate(batch):
            eval_ids = {p: str(eval_jobs[p][i].job_id) for p in protocols if p in s.evals}
            write_jobs(s.dir, chain_records(s, str(pre_jobs[i].job_id), eval_ids))
            s.paths.snapshot.write_text(str(snapshot))

    def run(self, trial_dirs: list[Path], progress: Progress, active: list[Path] | None = None) -> None:
        from orchestration.backends.slurm import sacct_states

        for d in trial_dirs:
            TrialPaths(d).failed.unlink(missing_ok=True)
        self.submit(trial_dirs)
        watch = list(trial_dirs) + list(active or [])
        if not watch:  # everything already finished or pruned
            return
        while True:
            ids = [j["job_id"] for d in watch for j in read_jobs(d)]
            st = sacct_states(ids)
            progress()
            if ids and all(st.get(i, ("PENDING", ""))[0] in TERMINAL for i in ids):
                break
            time.sleep(3)
        progress()
