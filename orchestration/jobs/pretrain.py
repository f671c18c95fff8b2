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
from orchestration import tracking
from orchestration.jobs.requeue import EXIT_REQUEUED, requeue_count, requeue_self, slurm_job_id
from orchestration.jobs.tracking_calls import finalize_run, safe
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

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit on preemption/timeout before training took over the signal:
        resubmit the same task; it resumes from the trial's checkpoint."""
        import submitit

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
        from mugs.callbacks import JsonlMetrics, ProgressBar
        from mugs.checkpoint import atomic_write_text
        from mugs.distributed import init_distributed
        from mugs.engine import NonFiniteLossError, Trainer

        spec = self.spec
        out = spec.dir
        ctx = init_distributed()
        main = ctx.is_main
        uri, run_id = spec.tracking_uri, spec.run_id
        attempt = requeue_count()
        spool = out / "mlflow_spool.jsonl"
        if main and run_id:
            safe(tracking.sync_spool, uri, run_id, spool)  # metrics a previous attempt could not deliver
            tags = {
                "mugs.requeue_count": str(attempt),
                "mugs.host": socket.gethostname(),
                "mugs.code_dir": str(Path(__file__).resolve().parents[2]),  # the snapshot on SLURM
            }
            job = slurm_job_id()
            if job:
                tags["slurm.pretrain_job_id"] = job
            safe(tracking.set_tags, uri, run_id, tags)
            safe(tracking.set_status, uri, run_id, "RUNNING")

        threads = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("MUGS_NUM_THREADS")
        if threads and threads.isdigit():
            import torch

            torch.set_num_threads(int(threads))
        if main:
            with open(out / "pretrain_starts.log", "a") as f:
                f.write(
                    f"{time.time():.3f} pid={os.getpid()} attempt={attempt} host={socket.gethostname()}\n"
                )
        cfg = config_from_dict(spec.config)
        validate(cfg)
        callbacks: list[Any] = [JsonlMetrics(out / "metrics.jsonl"), ProgressBar()]
        if spec.backend != "slurm":  # SLURM jobs are stopped by scancel; runners (also Ray
            # workers inside an allocation) may sit on a host no signal from the driver reaches
            callbacks.append(_StopFileWatcher(self, out))
        mlflow_cb = None
        if main and run_id:
            mlflow_cb = tracking.MlflowMetricsCallback(uri, run_id, spool)
            callbacks.append(mlflow_cb)
        try:
            if main:
                atomic_write_text(out / "config.yaml", cfg.to_yaml())
            trainer = Trainer(cfg, out, callbacks=callbacks, dist_ctx=ctx)
            trainer.maybe_resume()
            if spec.reference == UNTRAINED:  # a reference trial: the initial weights, 0 steps
                trainer.total_steps = 0
            self._install_signal_handlers(trainer)
            status = trainer.fit()
        except NonFiniteLossError as e:
            self._fail(f"non-finite loss: {e}")
            raise
        except Exception as e:
            self._fail(f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}")
            raise
        finally:
            if mlflow_cb is not None:
                mlflow_cb.close()

        if status == "completed":
            if main:
                (out / "PRETRAINED").write_text(f"{trainer.step}\n")
                if run_id:
                    safe(tracking.log_artifact, uri, run_id, out / "config.yaml")
                    finalize_run(spec)
            return {"status": "completed", "step": trainer.step, "checkpoint": str(spec.checkpoint)}

        # stopped early: cancelled, or preempted / timed out
        if self._stop_reason == "cancelled":
            why = f"cancelled at step {trainer.step}"
            if (out / PRUNED_FILE).exists():  # the sweep's pruner stopped this trial
                why = f"{(out / PRUNED_FILE).read_text().strip()}; stopped at step {trainer.step}"
            (out / "CANCELLED").write_text(why + "\n")
            if main and run_id:
                safe(tracking.set_tags, uri, run_id, {"mugs.failure_reason": why})
                safe(tracking.set_status, uri, run_id, "KILLED")
            sys.exit(1)
        if attempt >= spec.max_requeues:
            reason = f"preempted or timed out {attempt + 1} times; requeue limit {spec.max_requeues} reached"
            self._fail(reason)
            raise RuntimeError(reason)
        if main:
            if run_id:
                safe(tracking.set_tags, uri, run_id, {"mugs.requeue_count": str(attempt + 1)})
            requeue_self()  # on SLURM: same job id, back to PENDING; locally the runner reruns us
        # Exit without a result so submitit does not consider the job done.
        sys.exit(EXIT_REQUEUED)

    def _fail(self, reason: str) -> None:
        spec = self.spec
        (Path(spec.trial_dir) / "FAILED").write_text(reason + "\n")
        if spec.run_id:
            safe(tracking.set_tags, spec.tracking_uri, spec.run_id, {"mugs.failure_reason": reason[:4000]})
            safe(tracking.set_status, spec.tracking_uri, spec.run_id, "FAILED")
