"""SLURM backend through submitit: pretraining, then evaluations as ``afterok`` dependencies
(cancelled by SLURM if pretraining fails), requeue on USR2 (preemption or ``--signal`` before
the time limit), DDP across tasks/nodes, a code snapshot per submission, arrays split to the
cluster's MaxArraySize.

Nothing hostile reaches sbatch: options are strict (:class:`SlurmOptions`: integers, single safe
words), job and trial names are safe words (:func:`check_name`), and each generated script is
checked before it is submitted (:func:`check_sbatch_script`); refusals are SlurmInputError."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from mugs.errors import ConfigError
from orchestration.backends.base import TERMINAL, JobState
from orchestration.snapshot import snapshot_code
from orchestration.trial import SUBMITTING, TrialSpec, chain_records, job_record, read_jobs, write_jobs

# Everything below is matched with re.fullmatch (``$`` alone would let a trailing newline through).
NAME_LIMIT = 100  # trial names (--name) and sweep names
JOB_NAME_LIMIT = 200  # mugs-<trial id>[-<protocol>], mugs-sweep-<sweep name>[-<protocol>]
NAME_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{NAME_LIMIT - 1}}}$"  # no "/", no "." or ".."
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
WORD_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.,:+-]{0,127}$"  # partition, account, qos (comma lists too)
# sbatch --constraint: names, & (AND), | (OR), * (node count), [...] (matching OR, multiple
# counts), (...) (grouping), comma lists. No whitespace, quotes, #, $, `, ; or control characters.
CONSTRAINT_PATTERN = r"^[A-Za-z0-9(\[][A-Za-z0-9_.,:+*&|()\[\]-]{0,255}$"
_UNSAFE = "slurm_unsafe_value"


class SlurmInputError(ConfigError):
    """A value bound for SLURM (an option, a job or trial name, the generated sbatch script) is
    refused; the message names the key. A ConfigError: the CLI reports it with exit code 2."""


def _safe(pattern: str, rule: str) -> AfterValidator:
    rx = re.compile(pattern)

    def check(value: str) -> str:
        if not rx.fullmatch(value):
            raise PydanticCustomError(
                _UNSAFE, "{value} refused: {rule}", {"value": repr(value), "rule": rule}
            )
        return value

    return AfterValidator(check)


SlurmWord = Annotated[
    str,
    Field(strict=True),
    _safe(WORD_PATTERN, "letters, digits and _.,:+- only, first a letter or digit, at most 128 characters"),
]
Constraint = Annotated[
    str,
    Field(strict=True),
    _safe(
        CONSTRAINT_PATTERN,
        "feature names with &|*,[]() only (no spaces, quotes, #$`;), at most 256 characters",
    ),
]
_Int = Field(strict=True)  # no 1.5, no "2", no true


class SlurmOptions(BaseModel):
    """What a trial asks SLURM for. Strict: integers are integers, strings are single safe words,
    so no value can add a line to (or end the options of) the generated sbatch script."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    partition: SlurmWord | None = None
    account: SlurmWord | None = None
    qos: SlurmWord | None = None
    gpus: int = Field(default=0, ge=0, strict=True)  # per node
    cpus: int = Field(default=2, ge=1, strict=True)  # per task
    mem: float | None = Field(default=None, ge=0.001, allow_inf_nan=False, strict=True)  # GB per node
    time: int = Field(default=60, ge=1, strict=True)  # minutes
    nodes: int = Field(default=1, ge=1, strict=True)
    tasks_per_node: int | None = Field(default=None, ge=1, strict=True)  # default: gpus, or 1
    constraint: Constraint | None = None
    signal_delay_s: int = Field(default=90, ge=0, le=65535, strict=True)  # USR2 this long before the limit
    eval_time: int | None = Field(default=None, ge=1, strict=True)  # minutes; default: time


def sbatch_test_flags(o: SlurmOptions, name: str = "mugs-preflight") -> list[str]:
    """The sbatch options a pretraining job of ``o`` asks for, as command-line flags."""
    flags = [
        f"--job-name={name}",
        f"--time={o.time}",
        f"--nodes={o.nodes}",
        f"--ntasks-per-node={o.tasks_per_node or max(o.gpus, 1)}",
        f"--cpus-per-task={o.cpus}",
        f"--signal=USR2@{o.signal_delay_s}",
    ]
    if o.gpus:
        flags.append(f"--gpus-per-node={o.gpus}")
    if o.mem:
        flags.append(f"--mem={max(1, int(o.mem * 1024))}M")
    flags += [
        f"--{k}={getattr(o, k)}" for k in ("partition", "account", "qos", "constraint") if getattr(o, k)
    ]
    return flags


def preflight(o: SlurmOptions) -> str:
    """Ask slurmctld whether it would accept a pretraining job of ``o`` (``sbatch --test-only``,
    nothing is queued), before anything of a submission is created. Returns sbatch's answer;
    raises SlurmInputError (exit 2) when sbatch is missing or refuses, with its message."""
    cmd = ["sbatch", "--test-only", *sbatch_test_flags(o), "--wrap=true"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise SlurmInputError(
            "--backend slurm: sbatch not found on PATH (is this a SLURM login node?)"
        ) from None
    except subprocess.TimeoutExpired:
        raise SlurmInputError("--backend slurm: sbatch --test-only did not answer within 60 s") from None
    answer = (proc.stderr + proc.stdout).strip()
    if proc.returncode != 0:
        raise SlurmInputError(f"--backend slurm: slurmctld refuses the job ({' '.join(cmd[2:-1])}): {answer}")
    return answer


def slurm_options(values: Mapping[Any, Any], key: Callable[[str], str] = str) -> SlurmOptions:
    """``values`` as SlurmOptions, or SlurmInputError naming each bad key as ``key(field)``."""
    try:
        return SlurmOptions.model_validate(dict(values))
    except ValidationError as e:
        problems = []
        for err in e.errors():
            name = key(".".join(str(p) for p in err["loc"]))
            got = "" if err["type"] in (_UNSAFE, "extra_forbidden") else f" (got {err['input']!r})"
            problems.append(f"{name}: {err['msg']}{got}")
        raise SlurmInputError("; ".join(problems)) from None


def check_name(value: str, key: str, limit: int = NAME_LIMIT) -> str:
    """``value`` if it is a safe name (one path component, one shell word), else SlurmInputError."""
    if not isinstance(value, str) or len(value) > limit or not _NAME.fullmatch(value):
        raise SlurmInputError(
            f"{key}: {value!r} refused: letters, digits and _.- only, first a letter or digit, "
            f"at most {limit} characters"
        )
    return value


def private_dir(path: Path) -> None:
    """Create ``path`` readable by its owner only (the jobs run as the same user)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


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


def resolve_claim(spec: TrialSpec) -> None:
    """A submission claimed in jobs.json (SUBMITTING, written before sbatch) whose ids were never
    recorded: find its jobs by their unique name (sacct; array task = the claim's index) and
    record them; if SLURM has none, nothing was submitted, and the claim is dropped."""
    jobs = read_jobs(spec.dir)
    if not jobs or jobs[0].get("state") != SUBMITTING:
        return
    name, _, index = jobs[0].get("claim", "#").rpartition("#")
    names = ",".join([name, *(f"{name}-{p}" for p in spec.evals)])
    queries = (  # slurmctld's queue (no lag) and the accounting database (jobs that already ended)
        ["squeue", "-h", "-o", "%i|%j", f"--name={names}"],
        ["sacct", "-n", "-X", "-P", "-o", "JobID,JobName", "-S", "now-30days", f"--name={names}"],
    )
    out = "".join(subprocess.run(q, capture_output=True, text=True, timeout=60).stdout for q in queries)
    ids = claimed_job_ids(out, index)
    if name not in ids:
        write_jobs(spec.dir, [])  # no job: sbatch never ran (or failed); the trial is resubmitted
        return
    evals = {p: ids[f"{name}-{p}"] for p in spec.evals if f"{name}-{p}" in ids}
    write_jobs(spec.dir, chain_records(spec, ids[name], evals))


def claimed_job_ids(listing: str, index: str) -> dict[str, str]:
    """Job name -> the id of task ``index`` from ``JobID|JobName`` lines (squeue, sacct). An array
    job's task is ``<array>_<index>``; a batch of one trial is submitted as a plain job (no array),
    whose id is used as it is: sacct knows no ``<id>_0`` for it."""
    seen: dict[str, tuple[str, bool]] = {}
    for line in listing.splitlines():
        job_id, _, job_name = line.strip().partition("|")
        if not job_id or not job_name:
            continue
        base, sep, _ = job_id.partition("_")
        first, was_array = seen.get(job_name, (base, False))
        seen[job_name] = (first, was_array or bool(sep))
    return {n: (f"{b}_{index}" if arr else b) for n, (b, arr) in seen.items()}


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


# ------------------------------------------------------------------ the sbatch script check
_SBATCH_LINE = re.compile(r"#SBATCH --([a-z][a-z0-9-]*)(?:=([A-Za-z0-9_@%+=:,./-]+|'[^'\n]*'))?")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # every control character but the newline
SUBMITIT_EXPORT = "export SUBMITIT_EXECUTOR=slurm"


def _refuse(problem: str) -> SlurmInputError:
    return SlurmInputError(f"sbatch script: {problem}; refusing to submit it")


def _parse_script(lines: list[str]) -> tuple[dict[str, str | None], list[tuple[int, str]]]:
    """The ``#SBATCH`` options and the command lines (number, text) of a script's lines."""
    options: dict[str, str | None] = {}
    commands: list[tuple[int, str]] = []
    for no, line in enumerate(lines, start=1):
        if line.startswith("#SBATCH"):
            if commands:
                raise _refuse(
                    f"line {no} {line!r} comes after the first command (line {commands[0][0]} "
                    f"{commands[0][1]!r}): sbatch would ignore it"
                )
            m = _SBATCH_LINE.fullmatch(line)
            if m is None:
                raise _refuse(f"line {no} {line!r} is not a plain #SBATCH --option=value line")
            if m[1] in options:
                raise _refuse(f"line {no}: --{m[1]} given twice")
            options[m[1]] = None if m[2] is None else shlex.split(m[2])[0]
        elif line.strip() and not line.startswith("#"):
            commands.append((no, line))
    return options, commands


def _check_commands(commands: list[tuple[int, str]], setup: Sequence[str]) -> None:
    """The command lines are the setup lines, the submitit export, then one srun line."""
    want = [*setup, SUBMITIT_EXPORT]
    for i, (no, line) in enumerate(commands):
        if i < len(want) and line != want[i]:
            raise _refuse(f"line {no} {line!r} is not a line this project writes (expected {want[i]!r})")
        if i > len(want):
            raise _refuse(f"line {no} {line!r} is not a line this project writes (after the srun line)")
    if len(commands) != len(want) + 1:
        raise _refuse(f"{len(commands)} command lines, expected {len(want) + 1} (setup, export, srun)")
    no, line = commands[-1]
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise _refuse(f"line {no} {line!r}: {e}") from None
    if words[:1] != ["srun"] or "submitit.core._submit" not in words or shlex.join(words) != line:
        raise _refuse(f"line {no} {line!r} is not a plain srun ... submitit.core._submit command")


def check_sbatch_script(text: str, expect: Mapping[str, str], setup: Sequence[str] = ()) -> None:
    """Refuse (SlurmInputError) an sbatch script not shaped as submitit writes it for us: every
    ``#SBATCH`` line before the first command, each a single ``--option=word``; the options in
    ``expect`` (e.g. ``time``, ``signal``) present with those values; the commands exactly the
    ``setup`` lines, the submitit export and one srun line; no control character anywhere."""
    bad = _CONTROL.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        raise _refuse(f"control character {bad.group()!r} on line {line}")
    lines = text.split("\n")
    if lines[0] != "#!/bin/bash":
        raise _refuse(f"line 1 is {lines[0]!r}, not #!/bin/bash")
    options, commands = _parse_script(lines)
    for key, value in expect.items():
        if key not in options:
            raise _refuse(f"no #SBATCH --{key} line before the first command (expected --{key}={value})")
        if options[key] != value:
            raise _refuse(f"#SBATCH --{key}={options[key]} where --{key}={value} was expected")
    _check_commands(commands, setup)


@functools.cache
def _checked_executor_class() -> type:
    import submitit
    from submitit.slurm import slurm as submitit_slurm

    class CheckedExecutor(submitit.AutoExecutor):
        """submitit's SLURM executor that checks each sbatch script before it is submitted: a
        single job's, or an array's (submitit writes arrays through a fresh SlurmExecutor,
        from the same parameters plus the task count: the text checked is the text submitted)."""

        def __init__(self, folder: Path, expect: dict[str, str]) -> None:
            super().__init__(folder=folder, cluster="slurm")
            self.expect = expect

        def sbatch_text(self, tasks: int = 1) -> str:
            inner = self._executor
            params = {**inner.parameters, **({"map_count": tasks} if tasks > 1 else {})}
            return submitit_slurm._make_sbatch_string(
                command=inner._submitit_command_str, folder=inner.folder, **params
            )

        def check(self, tasks: int = 1) -> None:
            setup = self._executor.parameters.get("setup") or []
            check_sbatch_script(self.sbatch_text(tasks), self.expect, setup)

        def _internal_process_submissions(self, delayed_submissions: list[Any]) -> list[Any]:
            self.check(len(delayed_submissions))
            return super()._internal_process_submissions(delayed_submissions)

    return CheckedExecutor


class SlurmBackend:
    name = "slurm"

    def __init__(self, options: SlurmOptions | None = None) -> None:
        self.o = options or SlurmOptions()

    def _executor(
        self,
        snapshot: Path,
        name: str,
        folder: Path,
        after: str | None = None,
        dependency: str = "afterok",
    ) -> Any:
        """A submitit executor for pretraining (``after`` None) or an evaluation depending on
        ``after``, running the code in ``snapshot``, its logs in ``folder`` (``%j``: the job id)."""
        from submitit.slurm.slurm import SlurmJobEnvironment

        o = self.o
        check_name(name, "SLURM job name", JOB_NAME_LIMIT)
        is_eval = after is not None
        minutes = (o.eval_time or o.time) if is_eval else o.time
        expect = {
            "job-name": name,
            "time": str(minutes),
            "signal": f"{SlurmJobEnvironment.USR_SIG}@{o.signal_delay_s}",
        }
        params: dict[str, Any] = {
            "name": name,
            "timeout_min": minutes,
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
                params[f"slurm_{key}"] = expect[key] = getattr(o, key)
        # run in the snapshot: `python -m` puts the working directory first on sys.path
        additional: dict[str, Any] = {"requeue": True, "chdir": str(snapshot)}
        if is_eval:
            additional.update({"dependency": f"{dependency}:{after}", "kill-on-invalid-dep": "yes"})
        params["slurm_additional_parameters"] = additional
        private_dir(Path(folder).parent)  # submitit's pickles hold the spec, tracking URI included
        ex = _checked_executor_class()(folder, expect)
        ex.update_parameters(**params)
        return ex

    def submit(self, spec: TrialSpec, wait: bool = False) -> list[JobState]:
        from orchestration.jobs import EvalTask, PretrainTask

        snapshot = snapshot_code(spec.dir.parent.parent / "snapshots")
        logs = spec.dir / "slurm" / "%j"
        pre = self._executor(snapshot, f"mugs-{spec.trial_id}", logs).submit(PretrainTask(spec))
        jobs: list[JobState] = [job_record("pretrain", str(pre.job_id))]
        write_jobs(spec.dir, jobs)
        for p in spec.evals:
            ex = self._executor(snapshot, f"mugs-{spec.trial_id}-{p}", logs, after=str(pre.job_id))
            j = ex.submit(EvalTask(spec, p))
            jobs.append(job_record("eval", str(j.job_id), p))
            write_jobs(spec.dir, jobs)
        spec.paths.snapshot.write_text(str(snapshot))
        if wait:
            return self.wait(spec)
        return jobs

    def states(self, spec: TrialSpec) -> list[JobState]:
        resolve_claim(spec)
        jobs = read_jobs(spec.dir)
        st = sacct_states([j["job_id"] for j in jobs if j["job_id"]])
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
