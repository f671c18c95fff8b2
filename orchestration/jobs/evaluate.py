"""An evaluation job (kNN, linear, or the raw-pixel kNN) on the trial's final checkpoint; logs
``eval/*`` (``eval/pixels/*`` for the raw pixels) to the trial's MLflow run and finishes the run
when every requested evaluation has reported."""

from __future__ import annotations

import json
from typing import Any

from orchestration import tags
from orchestration.jobs.requeue import slurm_job_id
from orchestration.jobs.tracking_calls import finalize_run, track, tracking_agent
from orchestration.reference import metric_prefix
from orchestration.trial import TrialSpec


def eval_metrics(result: dict[str, Any], protocol: str = "knn") -> dict[str, float]:
    """The MLflow metrics of one evaluation result (``eval/knn_top1``, ``eval/pixels/knn_top1``, ...)."""
    prefix = metric_prefix(protocol)
    out: dict[str, float] = {}
    for k, v in result.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and (k.startswith(("knn_", "linear_"))):
            out[f"{prefix}{k}"] = float(v)
    for lr, acc in (result.get("linear_per_lr") or {}).items():
        out[f"{prefix}linear_top1_lr{lr}"] = float(acc)
    return out


class EvalTask:
    def __init__(self, spec: TrialSpec, protocol: str) -> None:
        self.spec, self.protocol = spec, protocol

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(EvalTask(self.spec, self.protocol))

    def __call__(self) -> dict[str, Any]:
        with tracking_agent(self.spec):
            return self._run()

    def _run(self) -> dict[str, Any]:
        from mugs.atomic import atomic_write_text
        from mugs.eval.__main__ import evaluate

        spec, uri, run_id = self.spec, self.spec.tracking_uri, self.spec.run_id
        try:
            if run_id:
                job = slurm_job_id()
                if job:
                    track("set_tags", uri, run_id, {tags.SLURM_JOB_ID.format(job=self.protocol): job})
            data_root = spec.config.get("data", {}).get("root")
            result = evaluate(spec.checkpoint, self.protocol, data_root)
            atomic_write_text(spec.paths.eval_result(self.protocol), json.dumps(result) + "\n")
            if run_id:
                spool = spec.paths.spool
                metrics = eval_metrics(result, self.protocol)
                track("log_metrics", uri, run_id, metrics, int(result["step"]), spool)
                finalize_run(spec)
            return result
        except Exception as e:
            reason = f"{self.protocol} eval: {type(e).__name__}: {e}"
            spec.paths.failed.write_text(reason + "\n")
            if run_id:
                track("set_tags", uri, run_id, {tags.FAILURE_REASON: reason[:4000]})
                track("set_status", uri, run_id, "FAILED")
            raise
