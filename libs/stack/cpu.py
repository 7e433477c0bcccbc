"""CPU used by each part of a running stack, read from /proc: what `harmon bench` reports per order.

The stack is the supervisor named in `<data-dir>/stack.lock` and every process below it: the six
services, the broker, PostgreSQL and its backends. The bench's own CPU is counted too — it runs on
the same cores. Linux only; elsewhere the meter reads nothing and the bench says so.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
_SERVICE = re.compile(r"services\.([a-z]+)")

BENCH = "bench"


def group_of(cmdline: str) -> str:
    """The part of the stack a process belongs to, from its command line."""
    if m := _SERVICE.search(cmdline):
        return m.group(1)
    if "tansu" in cmdline:
        return "broker"
    if "postgres" in cmdline:
        return "postgres"
    return "supervisor"


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may contain spaces and parentheses
    return int(fields[1]), (int(fields[11]) + int(fields[12])) * _TICK_S


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class CpuMeter:
    """Snapshots of CPU seconds per process of the stack; `since()` turns two into seconds per part."""

    def __init__(self, data_dir: Path):
        self.root: int | None = None
        try:
            self.root = int((data_dir / "stack.lock").read_text().strip())
        except (OSError, ValueError):
            pass
        self.available = self.root is not None and Path("/proc/self/stat").exists()

    def snapshot(self) -> dict[int, tuple[str, float]]:
        """pid → (part, CPU seconds) for the stack's processes and this one."""
        if not self.available:
            return {}
        stats = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (s := _stat(int(entry))) is not None:
                stats[int(entry)] = s
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        found: dict[int, tuple[str, float]] = {}
        todo = [self.root]
        while todo:
            pid = todo.pop()
            if pid in stats and pid not in found:
                found[pid] = (group_of(_cmdline(pid)), stats[pid][1])
                todo.extend(children.get(pid, []))
        found[os.getpid()] = (BENCH, time.process_time())
        return found

    @staticmethod
    def since(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
        """CPU seconds per part between two snapshots (a process that started meanwhile counts from zero)."""
        used: dict[str, float] = {}
        for pid, (part, seconds) in after.items():
            start = before.get(pid, (part, 0.0))[1]
            used[part] = used.get(part, 0.0) + max(0.0, seconds - start)
        return used
