"""Ending a process without the interpreter's teardown.

Tearing down an interpreter that has imported torch, timm, MLflow (SQLAlchemy) and scikit-learn
takes seconds, not milliseconds (measured with ``benchmarks/trial_overhead.py``: 1.4 s at the end
of a trial's chain process, 0.55 s at the end of ``mugs-orch train``, which has MLflow loaded).
Only for a process whose work is done: every file written atomically and closed, every MLflow
call synchronous (nothing buffered), no service (Ray) left to stop at exit.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def fast_exit(rc: int) -> NoReturn:
    """Flush logging, stdout and stderr, then end the process with ``rc`` at once."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
