"""``python -m mugs.train``: pretrain Mugs from a preset, a YAML file and ``--set`` overrides.

Writes OUT/config.yaml (fully resolved), OUT/metrics.jsonl and OUT/checkpoint.pth. With
``--resume`` it continues from OUT/checkpoint.pth when present. SIGUSR2/SIGTERM make it save a
checkpoint at the next step boundary and exit with code 75 (preempted, resumable).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from mugs.callbacks import Callback, JsonlMetrics, ProgressBar
from mugs.checkpoint import atomic_write_text
from mugs.config import ConfigError, MugsConfig, build_config, load_yaml_file
from mugs.errors import EXIT_REQUEUED
from mugs.presets import list_presets

EXIT_CONFIG = 2
EXIT_NONFINITE = 3


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mugs.train", description=__doc__.splitlines()[0])
    p.add_argument("--preset", help="named recipe (see --list-presets)")
    p.add_argument("--config", help="YAML file layered over the preset")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override, value parsed as YAML, e.g. --set method.loss_weights=[1,0,0]",
    )
    p.add_argument("--out", help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pth if present")
    p.add_argument("--list-presets", action="store_true")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def resolve_config(args: argparse.Namespace) -> MugsConfig:
    file_values = load_yaml_file(args.config) if args.config else None
    return build_config(args.preset, file_values, args.overrides)


def run(
    cfg: MugsConfig, out: Path, resume: bool, extra_callbacks: Sequence[Callback] = ()
) -> tuple[str, object]:
    """Build the trainer, optionally resume, train. Returns (status, trainer)."""
    from mugs.distributed import init_distributed
    from mugs.engine import Trainer

    ctx = init_distributed()
    out.mkdir(parents=True, exist_ok=True)
    if ctx.is_main:
        atomic_write_text(out / "config.yaml", cfg.to_yaml())
    callbacks: list[Callback] = [JsonlMetrics(out / "metrics.jsonl"), ProgressBar(), *extra_callbacks]
    trainer = Trainer(cfg, out, callbacks=callbacks, dist_ctx=ctx)
    if resume and trainer.maybe_resume():
        print(f"resumed from {trainer.checkpoint_path} at step {trainer.step}", file=sys.stderr, flush=True)

    def _stop(signum: int, _frame: object) -> None:
        print(f"signal {signum}: checkpointing at the next step boundary", file=sys.stderr, flush=True)
        trainer.request_stop()

    for sig in (signal.SIGUSR2, signal.SIGTERM):
        signal.signal(sig, _stop)
    return trainer.fit(), trainer


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list_presets:
        print("\n".join(list_presets()))
        return 0
    try:
        cfg = resolve_config(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.print_config:
        print(cfg.to_yaml())
        return 0
    if not args.out:
        print("error: --out is required", file=sys.stderr)
        return EXIT_CONFIG
    from mugs.engine import NonFiniteLossError

    try:
        status, trainer = run(cfg, Path(args.out), args.resume)
    except NonFiniteLossError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return EXIT_NONFINITE
    print(json.dumps({"status": status, "step": trainer.step, "checkpoint": str(trainer.checkpoint_path)}))
    return EXIT_REQUEUED if status == "preempted" else 0


if __name__ == "__main__":
    sys.exit(main())
