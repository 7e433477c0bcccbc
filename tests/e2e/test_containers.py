"""The storefront flow on a real Apache Kafka container and a PostgreSQL container per service (the
images deploy/compose.yaml pins, each database made by compose's own init script), through
testcontainers; the services run on this machine in external mode. Skips where no Docker engine answers."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest

from libs.stack.processes import free_port
from libs.stack.supervisor import SERVICES
from tests.conftest import discard_data_dir, fresh_data_dir, until
from tests.deploy.manifests import DEPLOY, compose, compose_env, filled_env

from .deployed import run_external_mode

pytestmark = pytest.mark.e2e


def docker_engine_missing() -> str | None:
    """Why no Docker engine can be used here, in one line, or None."""
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as exc:  # noqa: BLE001 - any failure to reach it is the reason to skip
        detail = (str(exc).strip().splitlines() or [""])[0][:160]
        return f"no Docker engine reachable ({type(exc).__name__}: {detail})"
    return None


@pytest.fixture(scope="module")
def engine() -> None:
    reason = docker_engine_missing()
    if reason:
        pytest.skip(reason)


def kafka_container(spec: dict):
    from testcontainers.core.container import DockerContainer

    kafka = compose_env(spec["services"]["kafka"])
    port = free_port()  # the same number outside and in: the broker advertises the address clients dial
    container = DockerContainer(spec["services"]["kafka"]["image"]).with_bind_ports(port, port)
    host = container.get_docker_client().host()
    kafka |= {"KAFKA_LISTENERS": f"PLAINTEXT://:{port},CONTROLLER://:9093",
              "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port}"}
    kafka.pop("KAFKA_LOG_DIRS")  # the image's own directory: no volume here
    for key, value in kafka.items():
        container.with_env(key, value)
    return container, f"{host}:{port}"


def postgres_container(spec: dict, service: str):
    from testcontainers.core.container import DockerContainer

    db = spec["services"][f"{service}-db"]
    container = DockerContainer(db["image"]).with_exposed_ports(5432)
    for key, value in compose_env(db).items():
        container.with_env(key, value)
    for volume in db["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            container.with_volume_mapping(str((DEPLOY / source).resolve()), target, "ro")
    return container, compose_env(db)


async def test_storefront_flow_on_kafka_and_postgres_containers(engine):
    from testcontainers.core.waiting_utils import wait_for_logs

    spec = compose(filled_env())
    data_dir = fresh_data_dir("harmon-containers-")
    (data_dir / "logs").mkdir()
    started = []
    try:
        kafka, bootstrap = kafka_container(spec)
        started.append(kafka.start())
        dbs = {}
        for service in SERVICES:
            container, env = postgres_container(spec, service)
            started.append(container.start())
            dbs[service] = (container, env)
        await asyncio.to_thread(wait_for_logs, kafka, "Kafka Server started", 120)
        dsns = {}
        for service, (container, env) in dbs.items():
            host, port = container.get_container_host_ip(), container.get_exposed_port(5432)
            dsns[service] = (f"postgresql://{env['SERVICE_DB']}:{env['SERVICE_DB_PASSWORD']}@{host}:{port}/"
                             f"{env['SERVICE_DB']}")

            async def accepts(dsn: str = dsns[service]) -> bool:
                try:
                    await (await asyncpg.connect(dsn, timeout=3)).close()  # the init script's role, over TCP
                    return True
                except (OSError, asyncio.TimeoutError, asyncpg.PostgresError):
                    return False
            await until(accepts, timeout=120, message=f"{service}'s PostgreSQL container takes its role")
        partitions = int(compose_env(spec["services"]["migrate"])["HARMON_PARTITIONS"])
        await run_external_mode(data_dir, bootstrap, dsns, partitions=partitions)
    finally:
        for container in reversed(started):
            await asyncio.to_thread(container.stop)
    discard_data_dir(data_dir)
