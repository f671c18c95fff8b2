"""``--validate``: every job a submission would make, shown to slurmctld with ``sbatch
--test-only`` (it plans the job and answers when and where it would start, or why it cannot run)
and never queued. The scripts are the ones a real submission writes (the same executors, the
same check), so a plan accepted here needs no edit on the cluster.

Evaluations depend on their pretraining job: they are tested with ``--dependency`` on the id
slurmctld gave the pretraining test (slurmctld 22.05 accepts a dependency on a job it does not
hold in --test-only, so this checks the syntax, not the chain).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestration.backends.slurm import (
    SlurmBackend,
    SlurmInputError,
    SlurmOptions,
    check_name,
    sbatch_test_flags,
)

_JOB_ID = re.compile(r"\bJob (\d+) to start\b")
CODE_DIR = Path(__file__).resolve().parents[2]  # the jobs' working directory in this check
RAY_SCRIPT = CODE_DIR / "scripts" / "ray-slurm.sbatch"


@dataclass
class Verdict:
    """slurmctld's answer for one job of the plan."""

    label: str
    accepted: bool
    answer: str
    test_id: str | None = None  # the id --test-only reported (never queued)

    def line(self) -> str:
        return f"  {self.label:<34s} {'accepted' if self.accepted else 'REFUSED':<9s} {self.answer}"


def test_only(args: Sequence[str], label: str) -> Verdict:
    """``sbatch --test-only ARGS``: slurmctld's verdict, never a queued job."""
    cmd = ["sbatch", "--test-only", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise SlurmInputError("--validate: sbatch not found on PATH (is this a SLURM login node?)") from None
    except subprocess.TimeoutExpired:
        return Verdict(label, False, "sbatch --test-only did not answer within 60 s")
    answer = " ".join((proc.stderr + proc.stdout).split())
    m = _JOB_ID.search(answer)
    return Verdict(label, proc.returncode == 0, answer, m[1] if m else None)


def _test_script(text: str, label: str, tmp: Path) -> Verdict:
    path = tmp / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}.sh"
    path.write_text(text)
    return test_only([str(path)], label)


class PlanValidator:
    """Tests the jobs of one plan against slurmctld; logs and scripts go to a temporary folder."""

    def __init__(self, options: SlurmOptions, tmp: Path) -> None:
        self.backend, self.tmp = SlurmBackend(options), tmp
        self.verdicts: list[Verdict] = []

    def chain(self, name: str, evals: Sequence[str], tasks: int = 1, dependency: str = "afterok") -> None:
        """A pretraining job (an array of ``tasks`` when > 1) and its evaluations after it."""
        logs = self.tmp / "logs" / "%j"
        what = f"array of {tasks}" if tasks > 1 else "job"
        pre = self.backend._executor(CODE_DIR, name, logs)
        if tasks > 1:
            pre.update_parameters(slurm_array_parallelism=tasks)
        pre.check(tasks)  # the script check a real submission runs
        v = _test_script(pre.sbatch_text(tasks), f"pretrain {what}", self.tmp)
        self.verdicts.append(v)
        for p in evals:
            label = f"eval:{p} {what}"
            if v.test_id is None:
                self.verdicts.append(Verdict(label, False, "not tested: its pretraining job was refused"))
                continue
            ex = self.backend._executor(CODE_DIR, f"{name}-{p}", logs, after=v.test_id, dependency=dependency)
            if tasks > 1:
                ex.update_parameters(slurm_array_parallelism=tasks)
            ex.check(tasks)
            self.verdicts.append(_test_script(ex.sbatch_text(tasks), label, self.tmp))

    def ray_allocation(self, spec_path: str) -> None:
        """The alternative: the whole sweep in one allocation running a Ray cluster."""
        o = self.backend.o
        if not RAY_SCRIPT.is_file():
            self.verdicts.append(Verdict("ray-in-slurm allocation", False, f"{RAY_SCRIPT} not found"))
            return
        tasks = o.tasks_per_node or max(o.gpus, 1)
        flags = [f for f in sbatch_test_flags(o, "mugs-ray-sweep") if not f.startswith(("--ntasks", "--cpus"))]
        flags += ["--ntasks-per-node=1", f"--cpus-per-task={o.cpus * tasks}"]
        self.verdicts.append(test_only([*flags, str(RAY_SCRIPT), spec_path], "ray-in-slurm allocation"))

    def report(self, title: str) -> int:
        """Print every verdict; 0 when slurmctld accepts all, else SlurmInputError (exit 2)."""
        print(f"{title}: {len(self.verdicts)} job(s) tested with sbatch --test-only (nothing queued)")
        for v in self.verdicts:
            print(v.line())
        refused = [v for v in self.verdicts if not v.accepted]
        if refused:
            raise SlurmInputError(
                f"--validate: slurmctld refuses {len(refused)} of {len(self.verdicts)} job(s); "
                f"first: {refused[0].label}: {refused[0].answer}"
            )
        print("all accepted")
        return 0


def validate_train(options: SlurmOptions, trial_name: str, evals: Sequence[str]) -> int:
    """``mugs-orch train --backend slurm --validate``: the pretraining job and its evaluations."""
    check_name(trial_name, "trial name")
    with tempfile.TemporaryDirectory(prefix="mugs-validate-") as tmp:
        v = PlanValidator(options, Path(tmp))
        v.chain(f"mugs-{trial_name}", evals)
        return v.report(f"trial {trial_name}")


def validate_sweep(
    options: SlurmOptions, sweep: str, batches: Sequence[tuple[Sequence[str], int]], spec_path: str
) -> int:
    """``mugs-orch sweep --backend slurm --validate``: each pretraining array (evaluation list,
    trial count) and its evaluation arrays, split to MaxArraySize as a submission splits them,
    then the Ray-in-SLURM allocation that could run the same sweep."""
    from orchestration.backends.slurm import max_array_size, split_for_arrays

    check_name(sweep, "sweep name")
    limit = max_array_size()
    with tempfile.TemporaryDirectory(prefix="mugs-validate-") as tmp:
        v = PlanValidator(options, Path(tmp))
        for evals, n in batches:
            for chunk in split_for_arrays(n, limit):
                v.chain(f"mugs-sweep-{sweep}-validate", evals, tasks=len(chunk), dependency="aftercorr")
        v.ray_allocation(spec_path)
        return v.report(f"sweep {sweep}")
