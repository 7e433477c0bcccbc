"""Child processes of a local stack: free ports, spawning in a session of their own, readiness,
stopping, and dying with the launcher. Used by the embedded broker and PostgreSQL and the supervisor."""
from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("harmon.stack")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def package_dir(name: str) -> Path:
    # find_spec on a top-level name locates the package without executing its code.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def tail(path: Path, offset: int = 0, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log empty)"


def read_text(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return "\nState:\tZ" not in read_text(f"/proc/{pid}/status")


def resident_bytes(pid: int | None) -> int | None:
    """A live process's resident memory (VmRSS), or None."""
    if pid is None:
        return None
    for line in read_text(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A preexec_fn: the child gets `sig` when its parent dies, so a killed `harmon dev` or test run
    leaves no broker, database or service behind. It runs between fork and exec (after any change
    of user, which would clear it), and "parent" is the thread that forked: spawn from the event
    loop's thread, never from asyncio.to_thread."""

    def arm() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, sig)
    return arm


class Child:
    """One long-running child process in its own session, with its log file."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name, self.log_path = name, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.offset = 0
        self.stopping = False  # stop() under way: an exit now is ours, not a crash
        self.started_at = 0.0  # time.monotonic() of the latest spawn

    def crashed(self) -> int | None:
        """The exit code if the process ended without stop() or a kill through us (those clear `proc`)."""
        if self.proc is None or self.stopping:
            return None
        return self.proc.poll()

    def signal_group(self, sig: int) -> bool:
        """Send `sig` to the child's process group (its own session); False if it is gone."""
        if self.pid is None:
            return False
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def spawn(self, argv: list[str], **kw: Any) -> None:
        with open(self.log_path, "ab") as out:
            self.offset = out.tell()
            log.debug("starting %s: %s", self.name, argv)
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, **kw)
        self.stopping, self.started_at = False, time.monotonic()

    async def wait_ready(self, probe: Callable[[], Awaitable[bool]], timeout: float, stop_signal: int) -> None:
        assert self.proc is not None
        started = time.monotonic()
        # Re-checking poll() after a good probe: a foreign listener on the port may have answered.
        while not await probe() or self.proc.poll() is not None:
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                raise self._failure(f"exited with code {code} during start-up")
            if time.monotonic() - started > timeout:
                await self.stop(stop_signal, 5.0)
                raise self._failure(f"was not ready within {timeout:.0f} s")
            await asyncio.sleep(0.05)

    def _failure(self, what: str) -> RuntimeError:
        return RuntimeError(f"{self.name} {what}; {self.log_path}:\n{tail(self.log_path, self.offset)}")

    async def stop(self, sig: int, timeout: float) -> None:
        proc = self.proc
        if proc is None:
            return
        self.stopping = True
        if proc.poll() is None:
            proc.send_signal(sig)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        if proc.poll() is None:
            log.warning("%s (pid %d) ignored signal %d for %.0f s; killing it", self.name, proc.pid, sig, timeout)
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group is ours: start_new_session=True
            except ProcessLookupError:
                pass
            await asyncio.to_thread(proc.wait)
        self.proc = None  # only now: a stop() cancelled half-way must be able to run again
        log.info("%s (pid %d) stopped, exit code %s", self.name, proc.pid, proc.returncode)
