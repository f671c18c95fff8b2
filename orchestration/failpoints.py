"""Named points where a test can kill the process, to prove that every way out is recoverable.

``MUGS_FAILPOINT=<name>`` makes :func:`failpoint` SIGKILL its own process when it reaches the
point of that name (nothing else: no cleanup, no finally, like an OOM kill or a lost node).
Unset, it costs one environment lookup. The names are the members of :data:`POINTS`.
"""

from __future__ import annotations

import os
import signal

ENV = "MUGS_FAILPOINT"
POINTS = (
    "sweep:after_parent",  # the parent run exists, no trial yet
    "trial:claimed",  # trial.yaml written, its MLflow run not yet created
    "trial:run_created",  # the run exists, trial.yaml does not hold its id yet
    "slurm:submitted",  # a SLURM array submitted, its job ids not yet in the trials' jobs.json
    "sweep:finishing",  # all trials ended, before trials.csv and the parent's status
)


def failpoint(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
