"""The whole stack on one machine: broker, PostgreSQL, one database per service, topics, migrations
and the six services as separate processes. `harmon dev` and the test suite both run it through `Stack`.

With `supervise=True` (harmon dev) a part that dies without being stopped is restarted with backoff,
and given up on after repeated crashes; `broker_bound` adds planned restarts of the embedded broker,
whose memory storage only grows (docs/operations.md, "Supervision").

Every child runs in its own session, so a Ctrl-C at the terminal reaches only the supervisor, which
then stops things in order: services first (SIGTERM, they drain while the broker and PostgreSQL are
still up), then PostgreSQL and the broker. Services also get SIGTERM from the kernel if the
supervisor dies without stopping them (Linux parent-death signal), and so do the broker and PostgreSQL.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import stat
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from aiokafka.admin import AIOKafkaAdminClient

from libs.contracts.topics import all_topic_names, gateway_replies
from libs.runtime.kafka import ensure_topics

from .databases import ExternalPostgres, migrate
from .embedded import EmbeddedBroker, EmbeddedPostgres
from .processes import Child, die_with_parent, free_port, resident_bytes, tail
from .supervision import MIB, Answer, Backoff, BrokerBound, RestartPolicy, describe_exit, not_quiet, still_quiet

log = logging.getLogger("harmon.stack")

SERVICES: tuple[str, ...] = ("gateway", "cart", "pricing", "credit", "orders", "notifier")
DEFAULT_PARTITIONS = 2
SIGNING_SECRET_BYTES = 48  # the gateway wants at least 32 characters
NOTIFIER_KEY_BYTES = 32  # AES-256-GCM (services/notifier/sealing.py)
INSTANCE_ID = "1"
WATCH_INTERVAL_S = 0.2  # how soon a crash is seen
HOLD_WAIT_S = 3.0  # how long new requests may wait at the gateway for the stack to turn quiet
BOUND_INTERVAL_S = 5.0  # how often the broker's size is read; 0.5 s while a restart waits for quiet
TAIL_LINES = 15

def write_private_json(path: Path, data: Any) -> None:
    """Write `data` as JSON readable by its owner only (0600), atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o600)  # O_CREAT's mode does not change an existing file's
    os.replace(tmp, path)


class SecretStore:
    """`<data-dir>/secrets.json` (0600): values generated once and reused by every later start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value
        write_private_json(self.path, self._data)

    def token(self, key: str, nbytes: int = 24) -> str:
        """The random token stored under `key`, made now if there is none yet."""
        if key not in self._data:
            self.set(key, secrets.token_urlsafe(nbytes))
        return self._data[key]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _env_var(service: str, name: str) -> str:
    return f"HARMON_{service.upper()}_{name}"


def running_stack_dsn(data_dir: Path | str, service: str, *, database_url: str | None = None,
                      db_prefix: str = "harmon") -> str:
    """The DSN of `service`'s database in the stack running on `data_dir` (as `harmon dev --data-dir`
    starts it), from its secrets.json and, for the embedded server, the port in PostgreSQL's lock file.
    `database_url` as for Stack: None reads HARMON_DATABASE_URL, "" means the embedded server."""
    data_dir = Path(data_dir).absolute()
    if not (data_dir / "secrets.json").exists():
        raise RuntimeError(f"no stack in {data_dir} (no secrets.json); start one with: harmon dev --data-dir {data_dir}")
    password = SecretStore(data_dir / "secrets.json").get(f"db_password_{service}")
    if password is None:
        raise RuntimeError(f"the stack in {data_dir} has no {service} database yet")
    name = f"{db_prefix}_{service}"  # as Stack._start names them
    database_url = os.environ.get("HARMON_DATABASE_URL") if database_url is None else database_url
    if database_url:
        return ExternalPostgres(database_url)._dsn(name, password, name)
    try:  # postmaster.pid's 4th line is the port; the file exists only while the server runs
        port = int((data_dir / "pg" / "pgdata" / "postmaster.pid").read_text().split("\n")[3])
    except (OSError, ValueError, IndexError):
        raise RuntimeError(f"the stack's PostgreSQL in {data_dir} is not running; start it with: "
                           f"harmon dev --data-dir {data_dir}") from None
    return f"postgresql://{quote(name, safe='')}:{quote(password, safe='')}@127.0.0.1:{port}/{name}"


class Stack:
    """Broker + PostgreSQL + services, all on loopback ports, with state under `data_dir`.

    `database_url` is an admin DSN of an existing PostgreSQL to use instead of the embedded one;
    None reads HARMON_DATABASE_URL, "" always uses the embedded server. Each service gets its own
    database and role `<db_prefix>_<service>` (another prefix keeps two stacks apart on one shared
    server). `extra_env` adds variables per service (e.g. {"orders": {"HARMON_ORDERS_STEP_TIMEOUT_S":
    "2"}}) on top of the stack's own. Ports are free ones picked at construction and kept for the
    Stack's life, so a restarted service comes back where it was.

    `supervise` restarts a service, the broker or (embedded) PostgreSQL that exits without being
    stopped, per `restart_policy`; `gave_up` names the parts it stopped trying, and `failed` is set
    when one of them is the broker or PostgreSQL. `broker_bound` (with `supervise`) restarts the
    embedded broker when it is due and every service says it is quiet.
    """

    def __init__(self, data_dir: Path | str, *, gateway_port: int | None = None,
                 partitions: int = DEFAULT_PARTITIONS, fsync: bool = True, services: Iterable[str] = SERVICES,
                 extra_env: Mapping[str, Mapping[str, str]] | None = None, database_url: str | None = None,
                 db_prefix: str = "harmon", ready_timeout: float = 60.0, stop_timeout: float = 15.0,
                 supervise: bool = False, restart_policy: RestartPolicy | None = None,
                 broker_bound: BrokerBound | None = None) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.services: tuple[str, ...] = tuple(services)
        unknown = set(self.services) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}; known: {', '.join(SERVICES)}")
        self.partitions, self.fsync = partitions, fsync
        self.extra_env = {k: dict(v) for k, v in (extra_env or {}).items()}
        self.database_url = os.environ.get("HARMON_DATABASE_URL") if database_url is None else database_url
        self.db_prefix = db_prefix
        self.ready_timeout, self.stop_timeout = ready_timeout, stop_timeout
        self.gateway_port = gateway_port or free_port()
        self.health_ports = {s: self.gateway_port if s == "gateway" else free_port() for s in self.services}
        self.logs_dir = self.data_dir / "logs"
        self.dsns: dict[str, str] = {}
        self.secrets: SecretStore | None = None
        self._broker: EmbeddedBroker | None = None
        self._pg: EmbeddedPostgres | None = None
        self._children: dict[str, Child] = {}
        self._lock_fd: int | None = None
        self._running = False
        self.timings: dict[str, float] = {}
        if broker_bound is not None and not supervise:
            raise ValueError("broker_bound needs supervise=True: the supervisor does the restarts")
        self.supervise, self.broker_bound = supervise, broker_bound
        self.restart_policy = restart_policy or RestartPolicy()
        self.restarts: dict[str, int] = {}  # part -> restarts after a crash
        self.planned_broker_restarts = 0
        # while a planned broker restart waits: service -> why it is not quiet (empty: about to restart)
        self.broker_restart_waiting: dict[str, str] | None = None
        self.gave_up: set[str] = set()
        self.failed = asyncio.Event()  # the broker or PostgreSQL stays down
        self._backoff: dict[str, Backoff] = {}
        self._recovering: dict[str, asyncio.Task[None]] = {}
        self._watchers: list[asyncio.Task[None]] = []
        self._broker_up = asyncio.Event()
        self._broker_lock = asyncio.Lock()
        self._topics: dict[str, int] = {}

    # -- what callers read ------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        if self._broker is None:
            raise RuntimeError("the stack is not started")
        return self._broker.bootstrap

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def admin_dsn(self) -> str:
        if self._pg is None:
            raise RuntimeError("the stack is not started")
        return self._pg.admin_dsn

    @property
    def signing_secret(self) -> str:
        assert self.secrets is not None, "the stack is not started"
        return self.secrets.token("gateway_signing_secret", SIGNING_SECRET_BYTES)

    @property
    def notifier_secrets_key(self) -> str:
        assert self.secrets is not None, "the stack is not started"
        return self.secrets.token("notifier_secrets_key", NOTIFIER_KEY_BYTES)

    @property
    def running(self) -> bool:
        """Between start() and stop(): True from the moment start() begins."""
        return self._running

    @property
    def embedded_postgres(self) -> bool:
        return not self.database_url

    def readyz_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.health_ports[service]}/readyz"

    def log_path(self, service: str) -> Path:
        return self.logs_dir / f"{service}.log"

    def pid(self, service: str) -> int | None:
        """The pid of a running service, or of "broker" / "postgres" (None if stopped or external)."""
        if service == "broker":
            return self._broker.pid if self._broker else None
        if service == "postgres":
            return self._pg.pid if self._pg else None
        child = self._children.get(service)
        return child.pid if child else None

    @property
    def ports(self) -> dict[str, int]:
        """Every loopback port of the stack: "broker", "postgres" (embedded only), each service's health port."""
        ports = dict(self.health_ports)
        if self._broker is not None:
            ports["broker"] = self._broker.port
        if self._pg is not None and self.embedded_postgres:
            ports["postgres"] = self._pg.port
        return ports

    def exited(self) -> dict[str, int]:
        """Services that ended on their own (not stopped or killed through the Stack), with exit codes."""
        return {name: code for name, child in self._children.items()
                if child.proc is not None and (code := child.proc.poll()) is not None}

    def log_tail(self, service: str, lines: int = 30) -> str:
        """The last lines a service logged since its latest start."""
        child = self._children.get(service)
        return tail(self.log_path(service), child.offset if child else 0, lines)

    def pids(self) -> dict[str, int]:
        return {name: pid for name in ("broker", "postgres", *self.services) if (pid := self.pid(name)) is not None}

    # -- start and stop -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start everything and return once every service answers /readyz with 200.

        On any failure (or cancellation) what was started is stopped again before the error propagates.
        """
        if self._running:
            return
        self._running = True
        started = time.monotonic()
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        self.timings["start"] = time.monotonic() - started
        log.info("stack ready in %.2f s: %s", self.timings["start"], ", ".join(self.services))
        if self.supervise:
            await self._start_supervision()

    async def _start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        self._lock_data_dir()
        if os.geteuid() == 0 and self.embedded_postgres:
            # As root PostgreSQL runs as `nobody`, which must be able to walk into data_dir/pg.
            self.data_dir.chmod(stat.S_IMODE(self.data_dir.stat().st_mode) | stat.S_IXOTH)
        if "gateway" in self.services and not _port_free(self.gateway_port):
            raise RuntimeError(f"port {self.gateway_port} on 127.0.0.1 is in use; choose another gateway port "
                               "(harmon dev --port N)")
        self.secrets = SecretStore(self.data_dir / "secrets.json")
        t = time.monotonic()
        self._broker = EmbeddedBroker(self.data_dir / "run")
        self._pg = (EmbeddedPostgres(self.data_dir / "pg", fsync=self.fsync) if self.embedded_postgres
                    else ExternalPostgres(self.database_url or ""))
        await asyncio.gather(self._broker.start(), self._pg.start())
        self.timings["broker+postgres"] = time.monotonic() - t

        t = time.monotonic()
        for service in self.services:
            # Names are fixed so a restart on the same data dir finds the same databases.
            self.dsns[service] = await self._pg.ensure_database(
                f"{self.db_prefix}_{service}", f"{self.db_prefix}_{service}",
                self.secrets.token(f"db_password_{service}"))
        await asyncio.gather(ensure_topics(self.bootstrap, all_topic_names(), self.partitions),
                             migrate(self.dsns))
        self.timings["databases+topics+migrations"] = time.monotonic() - t

        t = time.monotonic()
        for service in self.services:
            self._spawn(service)
        try:
            async with asyncio.TaskGroup() as tg:  # the first failure cancels the other waits
                for service in self.services:
                    tg.create_task(self._wait_ready(service))
        except ExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise RuntimeError("\n\n".join(map(str, group.exceptions))) from None
        self.timings["services ready"] = time.monotonic() - t

    def _lock_data_dir(self) -> None:
        # Held while the stack runs; the kernel drops it if this process dies, so it is never stale.
        fd = os.open(self.data_dir / "stack.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise RuntimeError(f"{self.data_dir} is in use by another stack (pid {owner}); stop it or use "
                                   "another data dir") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _unlock_data_dir(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def service_env(self, service: str) -> dict[str, str]:
        """The environment a service process starts with."""
        env = {k: v for k, v in os.environ.items()
               # each service sees its own DSN only, never another's nor the admin DSN
               if not (k.startswith("HARMON_") and k.endswith("DATABASE_URL"))}
        project_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env.update({
            "HARMON_KAFKA_BOOTSTRAP": self.bootstrap,
            "HARMON_BROKER_MODE": "embedded",
            "HARMON_PARTITIONS": str(self.partitions),
            "HARMON_INSTANCE_ID": INSTANCE_ID,
            _env_var(service, "DATABASE_URL"): self.dsns[service],
        })
        if service == "gateway":
            env["HARMON_GATEWAY_PORT"] = str(self.gateway_port)
            env["HARMON_GATEWAY_SIGNING_SECRET"] = self.signing_secret
        else:
            env[_env_var(service, "HEALTH_PORT")] = str(self.health_ports[service])
        if service == "notifier":  # seals the webhook endpoints' secrets: made once, kept with the state
            env["HARMON_NOTIFIER_SECRETS_KEY"] = self.notifier_secrets_key
        env.update(self.extra_env.get(service, {}))
        return env

    def _spawn(self, service: str) -> None:
        child = self._children.setdefault(service, Child(service, self.log_path(service)))
        child.spawn([sys.executable, "-m", f"services.{service}"], env=self.service_env(service),
                    cwd=self.data_dir, preexec_fn=die_with_parent())
        log.info("%s started, pid %s, log %s", service, child.pid, child.log_path)

    async def _wait_ready(self, service: str) -> None:
        child = self._children[service]
        url, last = self.readyz_url(service), "no answer"

        async def ready() -> bool:
            nonlocal last
            try:
                async with http.get(url) as r:
                    last = f"{r.status} {await r.text()}"
                    return r.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                last = f"no answer ({type(exc).__name__})"
                return False

        started = time.monotonic()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            try:
                await child.wait_ready(ready, self.ready_timeout, signal.SIGTERM)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\nlast {url}: {last}") from None
        log.info("%s ready in %.2f s", service, time.monotonic() - started)

    async def start_service(self, service: str) -> None:
        """Start one service that was stopped or killed, and wait until it is ready."""
        if service not in self.services:
            raise ValueError(f"{service} is not part of this stack ({', '.join(self.services)})")
        if self.pid(service) is None:
            self._spawn(service)
        await self._wait_ready(service)

    async def stop_service(self, service: str) -> None:
        """SIGTERM one service (it drains), SIGKILL it after `stop_timeout`."""
        child = self._children.get(service)
        if child is not None:
            await child.stop(signal.SIGTERM, self.stop_timeout)

    async def restart_service(self, service: str) -> None:
        await self.stop_service(service)
        await self.start_service(service)

    def kill_service(self, service: str) -> None:
        """SIGKILL one service at once (a crash: no drain), and reap it."""
        child = self._children.get(service)
        proc = child.proc if child else None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session, so its own group
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        child.proc = None
        log.info("%s (pid %d) killed", service, proc.pid)

    async def stop(self) -> None:
        """Stop services (drain, then SIGKILL stragglers), then PostgreSQL and the broker. Idempotent."""
        if not self._running:
            return
        started = time.monotonic()
        await self._stop_supervision()
        try:
            await asyncio.gather(*(c.stop(signal.SIGTERM, self.stop_timeout) for c in self._children.values()))
        finally:
            try:
                if self._pg is not None:
                    await self._pg.stop()
            finally:
                if self._broker is not None:
                    await self._broker.stop()
                self._running = False  # a later start() begins afresh
                self._unlock_data_dir()
        self.timings["stop"] = time.monotonic() - started

    # -- supervision ----------------------------------------------------------------------------------

    def _parts(self) -> dict[str, Child]:
        """What the supervisor watches: the broker, the embedded PostgreSQL, every service."""
        parts: dict[str, Child] = {}
        if self._broker is not None:
            parts["broker"] = self._broker.child
        if isinstance(self._pg, EmbeddedPostgres):
            parts["postgres"] = self._pg.child
        parts.update(self._children)
        return parts

    def declared_topics(self) -> dict[str, int]:
        """Topic -> partitions the stack creates: every declared topic and DLT, and the gateway's replies."""
        layout = dict.fromkeys(all_topic_names(), self.partitions)
        if "gateway" in self.services:
            instance = self.extra_env.get("gateway", {}).get("HARMON_INSTANCE_ID", INSTANCE_ID)
            layout[gateway_replies(instance)] = 1  # as the gateway creates it
        return layout

    async def topic_layout(self) -> dict[str, int]:
        """Topic -> partitions as the broker has them now."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:  # no topic names: a metadata request for all topics, which creates none
            return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()
                    if t.get("error_code", 0) == 0}
        finally:
            await admin.close()

    async def _start_supervision(self) -> None:
        self._broker_up.set()
        now = time.monotonic()
        for name in self._parts():
            self._backoff[name] = Backoff(self.restart_policy)
            self._backoff[name].started(now)
        # topics others made meanwhile (a demo's reply topic, a second gateway's) come back too
        self._topics = {**self.declared_topics(), **await self.topic_layout()}
        self._watchers = [asyncio.create_task(self._watch_crashes(), name="harmon-watch-crashes")]
        if self.broker_bound is not None:
            self._watchers.append(asyncio.create_task(self._watch_broker_size(), name="harmon-watch-broker"))

    async def _stop_supervision(self) -> None:
        tasks = [*self._watchers, *self._recovering.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watchers, self._recovering = [], {}

    async def _watch_crashes(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            for name, child in self._parts().items():
                if name in self._recovering or name in self.gave_up:
                    continue
                code = child.crashed()
                if code is not None:
                    assert child.proc is not None
                    pid, child.proc = child.proc.pid, None  # seen: no second report of the same exit
                    self._recover(name, f"(pid {pid}) died: {describe_exit(code)}")

    def _recover(self, name: str, what: str) -> None:
        task = asyncio.create_task(self._recovery(name, what), name=f"harmon-recover-{name}")
        self._recovering[name] = task
        task.add_done_callback(lambda _: self._recovering.pop(name, None))

    async def _recovery(self, name: str, what: str) -> None:
        """Restart `name` after backoff until it is up, or give up on it. `what` says how it went down."""
        child, backoff, policy = self._parts()[name], self._backoff[name], self.restart_policy
        while True:
            last_lines = tail(child.log_path, child.offset, TAIL_LINES)
            delay = backoff.crashed(time.monotonic())
            if delay is None:
                stays = ("; nothing works without it, so the stack stops" if name in ("broker", "postgres")
                         else "; the rest keeps running")
                log.error("%s %s. It went down %d times in %.0f s: giving up, %s stays down%s. Last lines of %s:\n%s",
                          name, what, backoff.recent, policy.window, name, stays, child.log_path, last_lines)
                self.gave_up.add(name)
                if name in ("broker", "postgres"):
                    self.failed.set()
                return
            log.error("%s %s; restarting it in %.1f s (crash %d in %.0f s; the supervisor gives up at %d). "
                      "Last lines of %s:\n%s", name, what, delay, backoff.recent, policy.window, policy.max_crashes,
                      child.log_path, last_lines)
            await asyncio.sleep(delay)
            started = time.monotonic()
            try:
                await self._start_part(name)
            except Exception as exc:  # noqa: BLE001 - a failed start is one more crash
                what = f"did not come back: {str(exc).splitlines()[0]}"
                continue
            backoff.started(time.monotonic())
            self.restarts[name] = self.restarts.get(name, 0) + 1
            log.warning("%s is back: pid %s, up in %.1f s", name, child.pid, time.monotonic() - started)
            return

    async def _start_part(self, name: str) -> None:
        if name == "broker":
            await self._restart_broker(planned=False)
        elif name == "postgres":
            assert self._pg is not None
            await self._pg.start()
        else:
            await self._broker_up.wait()  # a service started now would create topics itself
            self._spawn(name)
            await self._wait_ready(name)

    async def _restart_broker(self, *, planned: bool, layout: dict[str, int] | None = None) -> None:
        """Start the broker again on its port and create every topic before any service sees it.

        Tansu creates an unknown topic with 4 partitions on any metadata request that allows it (every
        consumer and producer's does), so a service that reconnected first would make its topics with
        the wrong count. The services are paused (SIGSTOP) from before the broker listens until the
        topics exist; their connections then find the topics as the stack made them. `planned`: stop
        the running broker first; `layout` is what it had, read before (topics made since start)."""
        assert self._broker is not None
        async with self._broker_lock:
            self._topics.update(layout or {})
            self._broker_up.clear()
            paused_at = time.monotonic()
            paused = [c for c in self._children.values() if c.signal_group(signal.SIGSTOP)]
            try:
                if planned:
                    # everything it holds was consumed, and Tansu waits for its clients on SIGTERM (5 s,
                    # the services being paused): nothing is lost by not waiting
                    await self._broker.kill()
                await self._broker.start()
                listening = time.monotonic()
                by_count: dict[int, list[str]] = {}
                for topic, count in self._topics.items():
                    by_count.setdefault(count, []).append(topic)
                try:
                    for count, names in by_count.items():
                        await ensure_topics(self.bootstrap, names, count)
                except BaseException:
                    await self._broker.stop()  # the next attempt starts from an empty broker again
                    raise
            finally:
                for c in paused:
                    c.signal_group(signal.SIGCONT)
            self._broker_up.set()
            log.info("broker on %s again: %d topics made %.0f ms after it was ready; services paused %.0f ms",
                     self.bootstrap, len(self._topics), (time.monotonic() - listening) * 1000,
                     (time.monotonic() - paused_at) * 1000)

    async def readyz_all(self, http: aiohttp.ClientSession) -> dict[str, Answer]:
        """Every service's /readyz at once: (status, JSON) or the error."""
        async def one(service: str) -> Answer:
            try:
                async with http.get(self.readyz_url(service)) as r:
                    return r.status, await r.json(content_type=None)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                return exc
        return dict(zip(self.services, await asyncio.gather(*(one(s) for s in self.services))))

    async def _watch_broker_size(self) -> None:
        bound = self.broker_bound
        assert bound is not None and self._broker is not None
        pending_since: float | None = None
        said = 0.0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                await asyncio.sleep(BOUND_INTERVAL_S if pending_since is None else 0.5)
                child = self._broker.child
                if not self._broker_up.is_set() or "broker" in self._recovering or "broker" in self.gave_up:
                    continue
                rss, now = resident_bytes(child.pid), time.monotonic()
                if not bound.due(rss, now - child.started_at):
                    pending_since = self.broker_restart_waiting = None
                    continue
                assert rss is not None
                if pending_since is None:
                    pending_since = said = now
                    log.warning("the broker holds %d MiB (bound %d MiB): it restarts as soon as every service is "
                                "quiet", rss // MIB, bound.max_rss_mib)
                layout: dict[str, int] = {}

                async def read_layout() -> None:  # topics made since start; read before the last check
                    layout.update(await self.topic_layout())

                try:
                    busy = await still_quiet(lambda: self.readyz_all(http), read_layout)
                    if busy and self._hold_gateway(True):
                        # under steady load the stack is never quiet by itself: new requests wait at the
                        # gateway (services/gateway/hold.py) while those in flight finish
                        busy = await self._quiet_while_held(http, read_layout)
                except Exception as exc:  # noqa: BLE001 - the broker's topics not readable: next round
                    self._hold_gateway(False)
                    log.debug("broker topics not readable: %r", exc)
                    continue
                self.broker_restart_waiting = busy
                if busy:
                    self._hold_gateway(False)
                    if now - said >= 60:
                        said = now
                        log.warning("broker restart waiting %.0f s for quiet (broker %d MiB); not quiet: %s",
                                    now - pending_since, rss // MIB,
                                    ", ".join(f"{s} ({why})" for s, why in busy.items()))
                    continue
                await self._announce_planned_restart(http)
                log.warning("every service is quiet: restarting the broker (%d MiB, pending %.0f s)",
                            rss // MIB, now - pending_since)
                pending_since = self.broker_restart_waiting = None
                try:
                    await self._restart_broker(planned=True, layout=layout)
                    await self._wait_all_ready(http, 10.0)  # held requests go on once every service is back
                except Exception as exc:  # noqa: BLE001 - then it is down: recover it as after a crash
                    self._recover("broker", f"did not come back from a planned restart: {str(exc).splitlines()[0]}")
                    continue
                finally:
                    self._hold_gateway(False)
                self.planned_broker_restarts += 1
                log.warning("broker restarted on %s (pid %s, %d MiB); topics recreated", self.bootstrap,
                            child.pid, (resident_bytes(child.pid) or 0) // MIB)

    def _hold_gateway(self, on: bool) -> bool:
        """Hold new requests at the gateway (SIGUSR2), or let them go (SIGHUP); False without a gateway.
        The gateway also lets them go by itself once its broker is back, and after its hold's maximum."""
        child = self._children.get("gateway")
        return child is not None and child.signal_group(signal.SIGUSR2 if on else signal.SIGHUP)

    async def _quiet_while_held(self, http: aiohttp.ClientSession, between) -> dict[str, str]:
        """With the gateway holding new requests, wait for every service to be quiet (what is in flight
        finishes in well under a second); who is still busy after HOLD_WAIT_S, or nobody."""
        deadline = time.monotonic() + HOLD_WAIT_S
        while True:
            busy = await still_quiet(lambda: self.readyz_all(http), between)
            if not busy or time.monotonic() > deadline:
                return busy
            await asyncio.sleep(0.1)

    async def _announce_planned_restart(self, http: aiohttp.ClientSession) -> bool:
        """Tell every service (SIGUSR1) that the broker restarts while all is consumed: each lets go of it
        (offsets committed, clients closed) and will replay nothing when it finds it empty. Waits until
        every one has let go (its /readyz says so), for at most 3 s."""
        for child in self._children.values():
            child.signal_group(signal.SIGUSR1)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            answers = await self.readyz_all(http)
            if all(isinstance(a, tuple) and isinstance(a[1], dict) and a[1].get("let_go_of_broker")
                   for a in answers.values()):
                return True
            await asyncio.sleep(0.05)
        log.warning("not every service let go of the broker within 3 s for its planned restart; restarting anyway "
                    "(a service still holding it recovers as after a crash)")
        return True

    async def _wait_all_ready(self, http: aiohttp.ClientSession, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            answers = await self.readyz_all(http)
            if all(isinstance(a, tuple) and a[0] == 200 for a in answers.values()):
                return
            await asyncio.sleep(0.05)
