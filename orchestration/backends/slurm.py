"""SLURM backend through submitit: pretraining, then evaluations as ``afterok`` dependencies
(cancelled by SLURM if pretraining fails), requeue on USR2 (preemption or ``--signal`` before
the time limit), DDP across tasks/nodes, a code snapshot per submission, arrays split to the
cluster's MaxArraySize."""

from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestration.backends.base import TERMINAL, JobState
from orchestration.snapshot import snapshot_code
from orchestration.trial import TrialSpec, read_jobs, write_jobs


@dataclass
class SlurmOptions:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus: int = 0  # per node
    cpus: int = 2  # per task
    mem: float | None = None  # GB per node
    time: int = 60  # minutes
    nodes: int = 1
    tasks_per_node: int | None = None  # default: gpus, or 1
    constraint: str | None = None
    signal_delay_s: int = 90  # USR2 this long before the time limit
    eval_time: int | None = None


def scontrol_config() -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    conf = {}
    for line in out.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            conf[k.strip()] = v.strip()
    return conf


def max_array_size() -> int:
    """The cluster's MaxArraySize (array indices must stay below it)."""
    return int(scontrol_config().get("MaxArraySize", "1001"))


def split_for_arrays(n: int, limit: int) -> list[range]:
    """Split n tasks into chunks whose array indices stay below ``limit``."""
    size = max(1, limit - 1)
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def sacct_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    if not job_ids:
        return {}
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,State,ExitCode", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    res = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) >= 3:
            res[parts[0]] = (parts[1].split()[0], parts[2])  # "CANCELLED by 0" -> CANCELLED
    return res


class SlurmBackend:
    name = "slurm"

    def __init__(self, options: SlurmOptions | None = None) -> None:
        self.o = options or SlurmOptions()

    def _executor(
        self,
        spec: TrialSpec,
        snapshot: Path,
        name: str,
        after: str | None = None,
        folder: Path | None = None,
        dependency: str = "afterok",
    ) -> Any:
        """A submitit executor for pretraining (``after`` None) or an evaluation depending on ``after``."""
        import submitit

        o = self.o
        ex = submitit.AutoExecutor(folder=folder or spec.dir / "slurm" / "%j", cluster="slurm")
        is_eval = after is not None
        params: dict[str, Any] = {
            "name": name,
            "timeout_min": (o.eval_time or o.time) if is_eval else o.time,
            "nodes": 1 if is_eval else o.nodes,
            "tasks_per_node": 1 if is_eval else (o.tasks_per_node or max(o.gpus, 1)),
            "cpus_per_task": o.cpus,
            "slurm_signal_delay_s": o.signal_delay_s,
            "slurm_setup": [f"export PYTHONPATH={shlex.quote(str(snapshot))}${{PYTHONPATH:+:$PYTHONPATH}}"],
        }
        if o.gpus:
            params["gpus_per_node"] = o.gpus if not is_eval else 1
        if o.mem:
            params["mem_gb"] = o.mem
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(o, key):
                params[f"slurm_{key}"] = getattr(o, key)
        # run in the snapshot: `python -m` puts the working directory first on sys.path
        additional: dict[str, Any] = {"requeue": True, "chdir": str(snapshot)}
        if is_eval:
            additional.update({"dependency": f"{dependency}:{after}", "kill-on-invalid-dep": "yes"})
        params["slurm_additional_parameters"] = additional
        ex.update_parameters(**params)
        return ex

    def submit(self, spec: TrialSpec, wait: bool = False) -> list[JobState]:
        from orchestration.jobs import EvalTask, PretrainTask

        snapshot = snapshot_code(spec.dir.parent.parent / "snapshots")
        pre = self._executor(spec, snapshot, f"mugs-{spec.trial_id}").submit(PretrainTask(spec))
        jobs: list[JobState] = [
            {
                "kind": "pretrain",
                "protocol": None,
                "job_id": str(pre.job_id),
                "state": "PENDING",
                "exit_code": "",
            }
        ]
        write_jobs(spec.dir, jobs)
        for p in spec.evals:
            j = self._executor(spec, snapshot, f"mugs-{spec.trial_id}-{p}", after=str(pre.job_id)).submit(
                EvalTask(spec, p)
            )
            jobs.append(
                {"kind": "eval", "protocol": p, "job_id": str(j.job_id), "state": "PENDING", "exit_code": ""}
            )
            write_jobs(spec.dir, jobs)
        spec.paths.snapshot.write_text(str(snapshot))
        if wait:
            return self.wait(spec)
        return jobs

    def states(self, spec: TrialSpec) -> list[JobState]:
        jobs = read_jobs(spec.dir)
        st = sacct_states([j["job_id"] for j in jobs])
        for j in jobs:
            if j["job_id"] in st:
                j["state"], j["exit_code"] = st[j["job_id"]]
        return jobs

    def wait(self, spec: TrialSpec, poll_s: float = 3.0, timeout_s: float | None = None) -> list[JobState]:
        t0 = time.time()
        while True:
            jobs = self.states(spec)
            if all(j["state"] in TERMINAL for j in jobs):
                return jobs
            if timeout_s is not None and time.time() - t0 > timeout_s:
                return jobs
            time.sleep(poll_s)

    def cancel(self, spec: TrialSpec) -> None:
        ids = [j["job_id"] for j in read_jobs(spec.dir)]
        if ids:
            subprocess.run(["scancel", *ids], check=False, timeout=60)
