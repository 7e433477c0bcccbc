"""Run the services as a deployment starts them, but as processes on this machine, and place an order
through them. Used by the tests of deploy/ (image command line), of external mode and of containers."""
from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import struct
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from libs.contracts.ids import new_id
from libs.stack.demo import ErpPublisher, create_tenant_with_keys
from libs.stack.processes import Child, die_with_parent, free_port
from tests.deploy.manifests import Image

from .conftest import Shop, erp_settled, publish_shop
from .storefront import Storefront

READY_TIMEOUT_S = 120.0  # six services joining groups on a 2-core machine shared with other runs


@dataclass
class Launch:
    """One container's process: what it runs, where, with what environment."""

    name: str                      # the container's (compose service, workload)
    service: str                   # gateway, cart, ... or migrate
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    health_port: int | None = None
    grace_s: float = 30.0          # how long the runtime waits after SIGTERM before SIGKILL
    probes: list[str] = field(default_factory=list)  # paths the orchestrator asks on health_port


def container_env(img: Image, runtime_env: Mapping[str, str], hostname: str, home: Path) -> dict[str, str]:
    """The environment a container of `img` starts with: what the runtime always sets, the image's ENV,
    then the runtime's (compose `environment`, Kubernetes `env`). The image's virtualenv is this test's."""
    env = {"HOSTNAME": hostname, "HOME": str(home), "LANG": "C.UTF-8"}
    env.update(img.env)
    env.update(runtime_env)
    env["PATH"] = env["PATH"].replace("$PATH", os.environ.get("PATH", "/usr/bin:/bin"))
    env["PATH"] = env["PATH"].replace(f"{img.venv}/bin", str(Path(sys.executable).parent))
    return env


def host_argv(img: Image, argv: list[str]) -> list[str]:
    """Image files the Dockerfile copies from the project (the entrypoint) are the project's files here."""
    return [str(img.files[a]) if a in img.files else a for a in argv]


def moved(value: str, addresses: Mapping[str, str]) -> str:
    """A DSN or a bootstrap list with each `host:port` of a container replaced by where it runs here."""
    if "://" in value:
        parts = urlsplit(value)
        userinfo, _, hostport = parts.netloc.rpartition("@")
        new = addresses.get(hostport, hostport)
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{new}" if userinfo else new))
    return ",".join(addresses.get(h, h) for h in value.split(","))


def free_health_ports(env: dict[str, str]) -> dict[str, str]:
    """Every container has the same fixed port (8080); on one host each process needs its own."""
    return {k: str(free_port()) for k in env if k == "HARMON_GATEWAY_PORT" or k.endswith("_HEALTH_PORT")}


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port` (from /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            raw = b"".join(struct.pack("<I", w) for w in struct.unpack(f">{len(raw) // 4}I", raw))
            found.add(socket.inet_ntop(family, raw))
    return found


class Processes:
    """The launched services, each in its own session with its log file; stopped as a runtime stops them."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: dict[str, tuple[Launch, Child]] = {}

    async def run_to_end(self, launch: Launch, timeout: float = 120.0) -> None:
        """A one-shot container (migrate): it must exit 0."""
        log = self.log_dir / f"{launch.name}.log"
        with open(log, "ab") as out:
            proc = await asyncio.create_subprocess_exec(*launch.argv, env=launch.env, cwd=launch.cwd,
                                                        stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out)
            code = await asyncio.wait_for(proc.wait(), timeout)
        assert code == 0, f"{launch.name} exited with {code}:\n{log.read_text()[-4000:]}"

    def start(self, launch: Launch) -> None:
        child = Child(launch.name, self.log_dir / f"{launch.name}.log")
        child.spawn(launch.argv, env=launch.env, cwd=launch.cwd, preexec_fn=die_with_parent())
        self.children[launch.name] = (launch, child)

    async def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            async def one(launch: Launch, child: Child) -> None:
                async def ready() -> bool:
                    try:
                        async with http.get(f"http://127.0.0.1:{launch.health_port}/readyz") as r:
                            return r.status == 200
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        return False
                await child.wait_ready(ready, timeout, signal.SIGTERM)
            await asyncio.gather(*(one(launch, child) for launch, child in self.children.values()))

    async def probe(self) -> dict[tuple[str, str], int]:
        """The status each orchestrator probe path answers on each service's health port."""
        seen = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            for launch, _ in self.children.values():
                for path in launch.probes:
                    async with http.get(f"http://127.0.0.1:{launch.health_port}{path}") as r:
                        seen[(launch.name, path)] = r.status
        return seen

    async def stop(self) -> dict[str, int | None]:
        """SIGTERM every service at once; the exit code of each that ended within its grace period."""
        async def one(launch: Launch, child: Child) -> tuple[str, int | None]:
            proc = child.proc
            if proc is None or proc.poll() is not None:
                return launch.name, proc.returncode if proc else None
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), launch.grace_s)
            except TimeoutError:
                await child.stop(signal.SIGKILL, 5.0)
                return launch.name, None
            code = proc.returncode
            child.proc = None
            return launch.name, code
        return dict(await asyncio.gather(*(one(launch, child) for launch, child in self.children.values())))

    async def kill(self) -> None:
        for _, child in self.children.values():
            await child.stop(signal.SIGKILL, 5.0)


async def place_order(base_url: str, gateway_dsn: str, bootstrap: str) -> dict:
    """A tenant, its master data published as the ERP does, then token → cart → price → checkout: 201."""
    keys = await create_tenant_with_keys(gateway_dsn, f"Deploy test {new_id('t')}")
    shop = Shop(tenant_id=keys.tenant_id, secret_key=keys.secret_key, publishable_key=keys.publishable_key)
    async with ErpPublisher(bootstrap) as erp:
        await publish_shop(erp, shop)
    await erp_settled(bootstrap, timeout=60)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        store = Storefront(http, base_url, shop.secret_key)
        token = await store.token(shop.big)
        cart = await store.cart_with(token, {"sku": "RICE-1KG", "order_uom": "CASE", "order_quantity": 1},
                                     {"sku": "OIL-1L", "quantity": 2})
        priced = await store.price(token, cart["id"])
        assert priced.status == 200, priced.body
        order = await store.checkout(token, cart["id"], key=new_id("k"), po_number="PO-DEPLOY")
        assert order.status == 201, order.body
        # the contract price of a CASE of 12 (1,100 each) and two list-price oils, each line with 15 % GCT
        assert order.body["total"] == priced.body["total"] == 13_200 + 1_980 + 1_798 + 270
        return order.body


def harmon_command() -> list[str]:
    script = Path(sys.executable).with_name("harmon")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from libs.stack.cli import main; main()"]


def operator_env() -> dict[str, str]:
    """This process's environment without any HARMON_*: only what the test sets reaches the services."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HARMON_")} | {"PYTHONUNBUFFERED": "1"}


async def run_external_mode(data_dir: Path, bootstrap: str, dsns: Mapping[str, str], *, partitions: int = 2,
                            while_running: Callable[[Processes], Awaitable[None]] | None = None) -> dict:
    """`harmon migrate`, then the six services in external mode on `bootstrap` and `dsns`; ready, one
    order, `while_running`, then SIGTERM: each must exit 0. Returns the order."""
    from libs.stack.supervisor import SERVICES

    procs = Processes(data_dir / "logs")
    common = {"HARMON_BROKER_MODE": "external", "HARMON_KAFKA_BOOTSTRAP": bootstrap,
              "HARMON_PARTITIONS": str(partitions)}
    try:
        await procs.run_to_end(Launch("migrate", "migrate", [*harmon_command(), "migrate"], operator_env() | common
                                      | {f"HARMON_{s.upper()}_DATABASE_URL": dsn for s, dsn in dsns.items()}, data_dir))
        for service in SERVICES:
            port = free_port()
            env = operator_env() | common | {f"HARMON_{service.upper()}_DATABASE_URL": dsns[service],
                                             "HARMON_INSTANCE_ID": f"ext-{service}"}
            if service == "gateway":
                env |= {"HARMON_GATEWAY_PORT": str(port), "HARMON_GATEWAY_SIGNING_SECRET": secrets.token_urlsafe(48)}
            else:
                env[f"HARMON_{service.upper()}_HEALTH_PORT"] = str(port)
            if service == "notifier":  # an operator's key for the webhook secrets (deploy/.env.example)
                env["HARMON_NOTIFIER_SECRETS_KEY"] = secrets.token_urlsafe(32)
            procs.start(Launch(service, service, [sys.executable, "-m", f"services.{service}"], env, data_dir, port))
        await procs.wait_ready()
        gateway_port = procs.children["gateway"][0].health_port
        order = await place_order(f"http://127.0.0.1:{gateway_port}", dsns["gateway"], bootstrap)
        if while_running is not None:
            await while_running(procs)
        codes = await procs.stop()
        assert codes == {s: 0 for s in SERVICES}, codes
        return order
    finally:
        await procs.kill()
