"""``python -m orchestration.jobs.run pretrain|eval TRIAL_DIR [--protocol P]``: run one job of a
trial in this process (what the local runner launches)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from orchestration.jobs.evaluate import EvalTask
from orchestration.jobs.pretrain import PretrainTask
from orchestration.trial import EVAL_PROTOCOLS, TrialSpec


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m orchestration.jobs.run")
    p.add_argument("kind", choices=("pretrain", "eval"))
    p.add_argument("trial_dir")
    p.add_argument("--protocol", choices=EVAL_PROTOCOLS)
    a = p.parse_args(argv)
    spec = TrialSpec.load(a.trial_dir)
    if a.kind == "pretrain":
        PretrainTask(spec)()
    else:
        if not a.protocol:
            p.error("eval needs --protocol")
        EvalTask(spec, a.protocol)()
    return 0


if __name__ == "__main__":
    sys.exit(main())
