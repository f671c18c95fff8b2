"""MLflow tag names, written by the orchestration and read by the reports: one definition each.

No imports: every module (reports included) may use it.
"""

from __future__ import annotations

# set by MLflow's own conventions
PARENT_RUN = "mlflow.parentRunId"  # a trial run's sweep (parent) run
RUN_NAME = "mlflow.runName"

# every run
ROLE = "mugs.role"  # "sweep" (parent) | "trial"
SWEEP = "mugs.sweep"
BACKEND = "mugs.backend"
FAILURE_REASON = "mugs.failure_reason"  # why a run ended FAILED or KILLED
HOST = "mugs.host"
VERSION = "mugs.version"
GIT_COMMIT = "mugs.git_commit"
GIT_DIRTY = "mugs.git_dirty"
CODE_DIR = "mugs.code_dir"

# trial runs
TRIAL_ID = "mugs.trial_id"
CLAIM = "mugs.claim"  # the token trial.yaml holds before its run exists: a rerun finds the run by it
CONFIG_HASH = "mugs.config_hash"
SETTING_HASH = "mugs.setting_hash"  # config hash without the seed: the trials of one setting
SEED = "mugs.seed"
AXIS_PREFIX = "mugs.axis."  # + swept key: its value (JSON)
PRESET = "mugs.preset"
EVALS = "mugs.evals"
REQUEUE_COUNT = "mugs.requeue_count"
REFERENCE = "mugs.reference"  # a reference trial's kind (untrained)
PRUNED = "mugs.pruned"
PRUNED_AT_STEP = "mugs.pruned_at_step"
PRUNE_RULE = "mugs.prune_rule"
OPTUNA_TRIAL = "mugs.optuna_trial"
SLURM_JOB_ID = "slurm.{job}_job_id"  # .format(job="pretrain" | protocol)

# sweep (parent) runs
AXES = "mugs.axes"
SEARCH = "mugs.search"
SWEEP_STATE = "mugs.sweep_state"  # running | finished | partial | interrupted
TRIALS_EXPECTED = "mugs.trials_expected"
TRIALS_FAILED = "mugs.trials_failed"
TRIALS_PRUNED = "mugs.trials_pruned"
BEST_VALUE = "mugs.best_value"
BEST_SETTING = "mugs.best_setting"
BEST_OPTUNA_TRIAL = "mugs.best_optuna_trial"
