"""Errors shared by the core's modules (no imports: any module may raise them)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or impossible. Names the key."""


EXIT_REQUEUED = 75  # EX_TEMPFAIL: the job checkpointed (preempted, timed out) and asks to be run again
