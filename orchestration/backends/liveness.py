"""Which process a record names, provably: pid + host + boot id + the process's start time.

A bare pid is not an identity: after a reboot or enough process churn the same number names
another process (an editor, another user's job), which a liveness check would wait on forever
and a cancel would signal. A record is alive only if, on this host and this boot, a process
with that pid exists and started at the recorded time (``/proc/<pid>/stat`` field 22, clock
ticks since boot), and is not a zombie. A record written by another host is judged by the
heartbeat file its runner keeps fresh; a record that cannot be proved (an older format, an
unreadable ``/proc``) counts as not alive and is never signalled.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from mugs.atomic import atomic_write_text

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return "unknown"


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name may hold spaces and parentheses
    return int(fields[19]) if len(fields) > 19 else None  # field 22 of the whole line


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return None


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    host: str
    boot: str
    start: int

    @classmethod
    def of(cls, pid: int) -> ProcessRecord | None:
        """The record of a live process of this host (None if it is already gone)."""
        start = start_ticks(pid)
        return None if start is None else cls(pid, socket.gethostname(), boot_id(), start)

    def line(self) -> str:
        return f"{self.pid} {self.host} {self.boot} {self.start}\n"

    @property
    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def alive_here(self) -> bool:
        """This host, this boot, the same process (start time), not a zombie."""
        if not self.on_this_host or self.boot != boot_id():
            return False
        return start_ticks(self.pid) == self.start and _state(self.pid) not in (None, "Z", "X")


def write_record(path: Path, rec: ProcessRecord) -> None:
    atomic_write_text(path, rec.line())


def read_record(path: Path) -> tuple[ProcessRecord | None, str | None]:
    """(record, host): the record if the file holds a complete one; the host it names in any case
    (an older ``pid host`` file gives no record, so nothing can be proved about its pid)."""
    try:
        parts = path.read_text().split()
    except OSError:
        return None, None
    host = parts[1] if len(parts) > 1 else None
    if len(parts) < 4:
        return None, host
    try:
        return ProcessRecord(int(parts[0]), parts[1], parts[2], int(parts[3])), host
    except ValueError:
        return None, host


def remove_if_mine(path: Path) -> None:
    """Remove the record if it names this process (a newer runner's record is left alone)."""
    rec, _ = read_record(path)
    if rec is not None and rec.pid == os.getpid() and rec.on_this_host:
        path.unlink(missing_ok=True)
