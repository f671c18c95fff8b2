"""The pretraining job: resume-or-start the Mugs trainer, stream metrics to MLflow, survive
preemption (checkpoint at the next step boundary, requeue, resume with no lost steps)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from mugs.callbacks import Callback
from mugs.config import config_from_dict, validate
from orchestration import tags
from orchestration.jobs.requeue import EXIT_REQUEUED, requeue_count, requeue_self, slurm_job_id
from orchestration.jobs.tracking_calls import (
    drain_agent,
    finalize_run,
    metrics_callback,
    track,
    track_queued,
    tracking_agent,
)
from orchestration.reference import UNTRAINED
from orchestration.trial import CANCEL_FILE, PRUNED_FILE, TrialSpec


class _StopFileWatcher(Callback):
    """Stops training when the trial directory asks for it (``CANCEL_REQUESTED`` from a cancel,
    ``PRUNED`` from the sweep's pruner): works wherever the job runs, e.g. on another Ray node
    than the driver, where no signal can reach it. Checked at each logged step."""

    FILES = (CANCEL_FILE, PRUNED_FILE)

    def __init__(self, task: PretrainTask, trial_dir: Path) -> None:
        self.task, self.dir = task, trial_dir

    def on_step_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        if any((self.dir / f).exists() for f in self.FILES):
            self.task._stop_reason = "cancelled"
            trainer.request_stop()


class PretrainTask:
    """Callable job (submitit pickles it). ``checkpoint()`` is submitit's requeue hook."""

    def __init__(self, spec: TrialSpec) -> None:
        self.spec = spec
        self._stop_reason: str | None = None
        # checkpoint() refused a requeue: the tracking calls that end the run (made by __call__)
        self._refusal: list[tuple[str, tuple]] | None = None
        self._metrics: Any = None  # the MLflow metrics callback (rank 0, a run to log to)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit on a USR2 that came before training took over the signal (the job
        was still starting up): requeue the same task, which resumes from the trial's checkpoint,
        within the same bound as our own requeues. Past ``max_requeues`` it returns None: submitit
        then ends the job without a requeue, and the run is FAILED with the reason.

        This runs inside submitit's signal handler, wherever the job was, so it makes no tracking
        call: an import there can meet a module the job is halfway through importing and fail
        (an ImportError from a half-made ``yaml``). A refusal is recorded, and the job ends on
        it however submitit's error fares (torch's import catches it: ``except Exception`` around
        its CUDA preload): :meth:`_train` stops on it once our own handlers are in, and
        :meth:`__call__` delivers the failure. A requeue's count is only queued to an open agent
        (:func:`track_queued`); the next attempt tags it anyway."""
        import submitit

        attempt = requeue_count()
        if attempt >= self.spec.max_requeues:
            reason = (
                f"preempted or timed out {attempt + 1} times (the last during start-up); "
                f"requeue limit {self.spec.max_requeues} reached"
            )
            self.spec.paths.failed.write_text(reason + "\n")
            # submitit now raises UncompletedJobError from its signal handler, in whatever frame
            # runs (maybe our start-up): that error must not replace the reason just recorded
            self._refusal = self._failure_calls(reason, requeues=attempt)  # counted: maybe not yet tagged
            return None
        if self.spec.run_id:
            track_queued(
                "set_tags", self.spec.tracking_uri, self.spec.run_id, {tags.REQUEUE_COUNT: str(attempt + 1)}
            )
        drain_agent()  # submitit requeues the job next, which ends this process
        return submitit.helpers.DelayedSubmission(PretrainTask(self.spec))

    def _install_signal_handlers(self, trainer: Any) -> None:
        def preempt(signum: int, _frame: Any) -> None:
            self._stop_reason = "preempted"
            trainer.request_stop()

        def cancel(signum: int, _frame: Any) -> None:
            self._stop_reason = "cancelled"
            trainer.request_stop()

        signal.signal(signal.SIGUSR2, preempt)  # SLURM --signal=USR2@T before timeout, or preemption
        signal.signal(signal.SIGTERM, cancel)  # scancel / local cancel

    def __call__(self) -> dict[str, Any]:
        try:
            with tracking_agent(self.spec):  # started before torch's import, which it overlaps
                try:
                    return self._run()
                finally:
                    self._deliver_refusal()  # after every call the job made: through its agent
        finally:
            if self._refusal is not None:  # refused before the agent was open: a fresh one, since
                with tracking_agent(self.spec):  # an import the signal broke may be half-made here
                    self._deliver_refusal()

    def _deliver_refusal(self) -> None:
        calls, self._refusal = self._refusal, None
        for op, call_args in calls or ():
            track(op, *call_args)

    def _run(self) -> dict[str, Any]:
        from mugs.distributed import init_distributed

        spec = self.spec
        ctx = init_distributed()
        attempt = requeue_count()
        if ctx.is_main:
            self._announce(attempt)
        threads = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("MUGS_NUM_THREADS")
        if threads and threads.isdigit():
            import torch

            torch.set_num_threads(int(threads))
        trainer, status = self._train(ctx)
        if status == "completed":
            if ctx.is_main:
                self._completed(trainer.step)
            return {"status": "completed", "step": trainer.step, "checkpoint": str(spec.checkpoint)}
        if self._stop_reason == "cancelled":  # stopped early: cancelled, or preempted / timed out
            self._cancelled(trainer.step, ctx.is_main)
            sys.exit(1)
        if attempt >= spec.max_requeues:
            reason = f"preempted or timed out {attempt + 1} times; requeue limit {spec.max_requeues} reached"
            self._fail(reason)
            raise RuntimeError(reason)
        if ctx.is_main:
            if spec.run_id:
                track("set_tags", spec.tracking_uri, spec.run_id, {tags.REQUEUE_COUNT: str(attempt + 1)})
            drain_agent()  # a requeue ends this process: deliver first
            requeue_self()  # on SLURM: same job id, back to PENDING; locally the runner reruns us
        # Exit without a result so submitit does not consider the job done.
        sys.exit(EXIT_REQUEUED)

    def _announce(self, attempt: int) -> None:
        """Rank 0: deliver what a previous attempt could not, tag the run as running."""
        spec = self.spec
        if spec.run_id:
            uri, run_id = spec.tracking_uri, spec.run_id
            track("sync_spool", uri, run_id, spec.paths.spool)
            new_tags = {
                tags.REQUEUE_COUNT: str(attempt),
                tags.HOST: socket.gethostname(),
                tags.CODE_DIR: str(Path(__file__).resolve().parents[2]),  # the snapshot on SLURM
            }
            job = slurm_job_id()
            if job:
                new_tags[tags.SLURM_JOB_ID.format(job="pretrain")] = job
            track("set_tags", uri, run_id, new_tags)
            track("set_status", uri, run_id, "RUNNING")

    def _log_start(self, attempt: int, from_step: int) -> None:
        """One line per start of pretraining (rank 0), with the step it resumed from (0: fresh)."""
        line = f"{time.time():.3f} pid={os.getpid()} attempt={attempt} host={socket.gethostname()} from_step={from_step}"
        with open(self.spec.paths.starts, "a") as f:
            f.write(line + "\n")

    def _callbacks(self, is_main: bool) -> list[Any]:
        from mugs.callbacks import JsonlMetrics, ProgressBar

        spec = self.spec
        callbacks: list[Any] = [JsonlMetrics(spec.paths.metrics), ProgressBar()]
        if spec.backend != "slurm":  # SLURM jobs are stopped by scancel; runners (also Ray
            # workers inside an allocation) may sit on a host no signal from the driver reaches
            callbacks.append(_StopFileWatcher(self, spec.dir))
        if is_main and spec.run_id:
            self._metrics = metrics_callback(spec)
            callbacks.append(self._metrics)
        return callbacks

    def _train(self, ctx: Any) -> tuple[Any, str]:
        """Build, resume and run the trainer; a failure writes the FAILED marker and the run's status."""
        from mugs.atomic import atomic_write_text
        from mugs.engine import NonFiniteLossError, Trainer

        spec = self.spec
        cfg = config_from_dict(spec.config)
        validate(cfg)
        callbacks = self._callbacks(ctx.is_main)
        try:
            if ctx.is_main:
                atomic_write_text(spec.paths.config, cfg.to_yaml())
            trainer = Trainer(cfg, spec.dir, callbacks=callbacks, dist_ctx=ctx)
            trainer.maybe_resume()
            self._install_signal_handlers(trainer)  # from here a USR2 is ours, not submitit's
            if self._refusal is not None:  # submitit refused a requeue; its error may be lost
                raise RuntimeError("requeue refused during start-up")
            if ctx.is_main:
                self._log_start(requeue_count(), trainer.step)
            if spec.reference == UNTRAINED:  # a reference trial: the initial weights, 0 steps
                trainer.total_steps = 0
            return trainer, trainer.fit()
        except NonFiniteLossError as e:
            self._fail(f"non-finite loss: {e}")
            raise
        except Exception as e:
            if self._refusal is None:
                self._fail(f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}")
            raise
        finally:
            if self._metrics is not None:  # flushed even when training failed
                self._metrics.close()

    def _completed(self, step: int) -> None:
        spec = self.spec
        spec.paths.pretrained.write_text(f"{step}\n")
        if spec.run_id:
            track("log_artifact", spec.tracking_uri, spec.run_id, spec.paths.config)
            finalize_run(spec)

    def _cancelled(self, step: int, is_main: bool) -> None:
        spec, paths = self.spec, self.spec.paths
        why = f"cancelled at step {step}"
        if paths.pruned.exists():  # the sweep's pruner stopped this trial
            why = f"{paths.pruned.read_text().strip()}; stopped at step {step}"
        paths.cancelled.write_text(why + "\n")
        if is_main and spec.run_id:
            track("set_tags", spec.tracking_uri, spec.run_id, {tags.FAILURE_REASON: why})
            track("set_status", spec.tracking_uri, spec.run_id, "KILLED")

    def _fail(self, reason: str) -> None:
        self.spec.paths.failed.write_text(reason + "\n")
        for op, call_args in self._failure_calls(reason):
            track(op, *call_args)

    def _failure_calls(self, reason: str, requeues: int | None = None) -> list[tuple[str, tuple]]:
        """The tracking calls that end the run as FAILED with ``reason`` (none without a run),
        tagging the number of requeues too when given."""
        spec = self.spec
        if not spec.run_id:
            return []
        new_tags = {tags.FAILURE_REASON: reason[:4000]}
        if requeues is not None:
            new_tags[tags.REQUEUE_COUNT] = str(requeues)
        return [
            ("set_tags", (spec.tracking_uri, spec.run_id, new_tags)),
            ("set_status", (spec.tracking_uri, spec.run_id, "FAILED")),
        ]
