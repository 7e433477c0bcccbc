"""What the supervisor decides, apart from the processes it acts on, so it can be tested on its own:
when a crashed part is restarted and when the supervisor gives up on it, how an exit is described,
whether the stack is quiet enough for a planned broker restart, and when the embedded broker is due one.
"""
from __future__ import annotations

import signal
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MIB = 1024 * 1024


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff per part: `first_delay` doubling up to `max_delay`, back to `first_delay`
    once the part has run `healthy_after` seconds; `max_crashes` within `window` seconds and the
    supervisor gives up on it."""

    first_delay: float = 0.5
    max_delay: float = 30.0
    healthy_after: float = 60.0
    max_crashes: int = 5
    window: float = 120.0


@dataclass
class Backoff:
    """The restart history of one part. Call `started` when it is up, `crashed` when it died."""

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    crashes: deque[float] = field(default_factory=deque)
    next_delay: float = -1.0
    started_at: float | None = None

    def __post_init__(self) -> None:
        if self.next_delay < 0:
            self.next_delay = self.policy.first_delay

    def started(self, now: float) -> None:
        self.started_at = now

    def crashed(self, now: float) -> float | None:
        """Seconds to wait before the next start, or None: too many crashes, give up."""
        p = self.policy
        if self.started_at is not None and now - self.started_at >= p.healthy_after:
            self.next_delay = p.first_delay
        self.started_at = None
        self.crashes.append(now)
        while self.crashes and now - self.crashes[0] > p.window:
            self.crashes.popleft()
        if len(self.crashes) >= p.max_crashes:
            return None
        delay, self.next_delay = self.next_delay, min(self.next_delay * 2, p.max_delay)
        return delay

    @property
    def recent(self) -> int:
        return len(self.crashes)


def describe_exit(returncode: int | None) -> str:
    """`exit code 1`, `killed by SIGKILL (signal 9)`: Popen's negative return codes are signals."""
    if returncode is None:
        return "no exit code"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        return f"killed by {name} (signal {-returncode})"
    return f"exit code {returncode}"


# What one /readyz probe gave: (HTTP status, parsed JSON body or None), or the error that stopped it.
Answer = tuple[int, Any] | BaseException


def not_quiet(answers: Mapping[str, Answer]) -> dict[str, str]:
    """The services that are not quiet, each with why. Quiet means a 200 whose JSON says `"quiet": true`;
    anything else, a missing field included, is not quiet: a restart of the broker then would lose
    messages in flight, so doubt counts as "no"."""
    why: dict[str, str] = {}
    for service, answer in answers.items():
        if isinstance(answer, BaseException):
            why[service] = f"no answer ({type(answer).__name__})"
            continue
        status, body = answer
        if status != 200:
            why[service] = f"/readyz {status}"
        elif not isinstance(body, dict) or "quiet" not in body:
            why[service] = 'no "quiet" in /readyz'
        elif body["quiet"] is not True:
            why[service] = "busy"
    return why


async def still_quiet(ask: Callable[[], Awaitable[Mapping[str, Answer]]],
                      between: Callable[[], Awaitable[object]]) -> dict[str, str]:
    """Whether a planned broker restart may go ahead: ask every service; if all are quiet, do the
    preparation (`between`) and ask again, so the answers that decide are the ones just before the
    pause. Returns who is not quiet and why (empty: go ahead)."""
    busy = not_quiet(await ask())
    if busy:
        return busy
    await between()
    return not_quiet(await ask())


@dataclass(frozen=True)
class BrokerBound:
    """When the embedded broker (memory storage: it keeps every record, and slows as it grows) is due a
    planned restart: its resident memory is over `max_rss_mib`, and it has run `min_uptime_s` (so a
    threshold below a fresh broker's own size cannot make a restart loop)."""

    max_rss_mib: float = 100.0
    min_uptime_s: float = 60.0

    def due(self, rss_bytes: int | None, uptime_s: float) -> bool:
        return rss_bytes is not None and uptime_s >= self.min_uptime_s and rss_bytes > self.max_rss_mib * MIB
