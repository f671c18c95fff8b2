"""What CPU a benchmark ran on: the figures of one machine are not another's."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_info() -> dict[str, Any]:
    """Model name, x86 family/model (a VM may show only "AMD EPYC"), the vector ISA torch uses,
    the cores this process may run on and torch's intra-op threads."""
    info = _cpuinfo()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "name": info.get("model name") or platform.processor() or platform.machine(),
        "vendor": info.get("vendor_id"),
        "family_model": f"{info['cpu family']}/{info['model']}" if "cpu family" in info else None,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores_available": cores,
        "torch_threads": torch.get_num_threads(),
    }
