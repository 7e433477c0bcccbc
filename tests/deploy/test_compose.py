"""deploy/compose.yaml, checked without a Docker engine: the compose specification's schema, then what
the stack needs of it (every service, real settings, migrate first, scaling, secrets from .env)."""
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from libs.stack.supervisor import SERVICES

from .manifests import (
    COMPOSE, DEPLOY, ENV_EXAMPLE, PROJECT_ROOT, compose, compose_env, compose_raw, compose_variables, env_example,
    harmon_services, health_port, image, interpolate, variables_read_by,
)

CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")
PINNED = re.compile(r"[a-z0-9./-]+:\d+\.\d+(\.\d+)?(-[a-z0-9]+)?")  # a release, never a moving tag


def test_compose_file_follows_the_compose_specification():
    if not CHECK_JSONSCHEMA.exists():
        pytest.skip("check-jsonschema is not installed (pip install -e '.[test]')")
    done = subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_service_of_the_stack_runs_from_the_image_by_its_command():
    services = harmon_services(compose())
    assert set(services) == {*SERVICES, "migrate"}
    for name in SERVICES:
        assert services[name]["command"] == ["python", "-m", f"services.{name}"], name
    assert services["migrate"]["command"] == ["harmon", "migrate"]
    assert {s["build"]["dockerfile"] for s in services.values()} == {"deploy/Dockerfile"}
    assert len({s["image"] for s in services.values()}) == 1, "one image"


def test_every_harmon_variable_a_container_gets_is_a_setting_its_process_reads():
    for name, service in harmon_services(compose()).items():
        reads = variables_read_by(service["command"])
        assert reads is not None, f"{name}: {service['command']} is not one of our processes"
        unread = {k for k in compose_env(service) if k.startswith("HARMON_")} - reads
        assert not unread, f"{name} is given {sorted(unread)}, which it does not read"


def test_the_services_get_external_mode_and_their_own_database_on_its_own_server():
    spec = compose()
    for name in SERVICES:
        env = compose_env(spec["services"][name])
        assert env["HARMON_BROKER_MODE"] == "external" and env["HARMON_KAFKA_BOOTSTRAP"] == "kafka:9092"
        dsn = urlsplit(env[f"HARMON_{name.upper()}_DATABASE_URL"])
        db = spec["services"][dsn.hostname]
        db_env = compose_env(db)
        assert PINNED.fullmatch(db["image"]) and db["image"].startswith("postgres:"), db["image"]
        assert dsn.port == 5432 and dsn.username == db_env["SERVICE_DB"] == dsn.path.lstrip("/")
        assert dsn.password == db_env["SERVICE_DB_PASSWORD"] != db_env["POSTGRES_PASSWORD"]
        volumes = [v for v in db["volumes"] if v.endswith(":/var/lib/postgresql")]
        assert len(volumes) == 1 and volumes[0].split(":")[0] in spec["volumes"], db["volumes"]
        init = next(v for v in db["volumes"] if "/docker-entrypoint-initdb.d/" in v).split(":")[0]
        assert (DEPLOY / init).is_file(), init
    dbs = [s for s in spec["services"] if s.endswith("-db")]
    assert len(dbs) == len(SERVICES)
    assert len({spec["services"][d]["volumes"][0] for d in dbs}) == len(dbs), "a volume each"
    passwords = {compose_env(spec["services"][d])["SERVICE_DB_PASSWORD"] for d in dbs}
    assert len(passwords) == len(dbs), "a password each"


def test_migrate_runs_first_once_kafka_and_every_database_are_healthy():
    spec = compose()
    migrate = spec["services"]["migrate"]
    assert migrate["restart"] == "no"
    waits = migrate["depends_on"]
    assert waits["kafka"]["condition"] == "service_healthy"
    assert all(waits[f"{s}-db"]["condition"] == "service_healthy" for s in SERVICES)
    env = compose_env(migrate)
    assert {f"HARMON_{s.upper()}_DATABASE_URL" for s in SERVICES} <= set(env)
    for name in SERVICES:
        assert spec["services"][name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert env[f"HARMON_{name.upper()}_DATABASE_URL"] == \
            compose_env(spec["services"][name])[f"HARMON_{name.upper()}_DATABASE_URL"]


def test_apache_kafka_in_kraft_mode_one_broker_no_auto_created_topics():
    kafka = compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:") and PINNED.fullmatch(kafka["image"]), kafka["image"]
    env = compose_env(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller" and env["KAFKA_NODE_ID"] == "1"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 1
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_ADVERTISED_LISTENERS"].endswith("//kafka:9092")
    assert any(v.endswith(":" + env["KAFKA_LOG_DIRS"]) for v in kafka["volumes"])


def test_scales_out_only_the_gateway_is_published_and_its_id_follows_the_container():
    img = image()
    for name, service in harmon_services(compose()).items():
        assert "container_name" not in service and "hostname" not in service, name
        # the instance id (the gateway's reply topic) comes from each container's hostname (entrypoint)
        assert "HARMON_INSTANCE_ID" not in compose_env(service), name
        if name != "gateway":
            assert "ports" not in service, f"{name} publishes a host port: --scale {name}=3 would collide"
    ports = compose()["services"]["gateway"]["ports"]
    assert len(ports) == 1 and ports[0].split(":")[-1] == str(health_port(img.env, "gateway")), ports


def test_each_service_is_healthy_when_its_readyz_says_so():
    img = image()
    for name in SERVICES:
        service = compose()["services"][name]
        test = " ".join(service["healthcheck"]["test"])
        assert f"http://127.0.0.1:{health_port(img.env, name)}/readyz" in test, (name, test)
        grace = re.fullmatch(r"(\d+)s", service["stop_grace_period"])
        assert grace and int(grace.group(1)) >= 25, "room for the drain after SIGTERM"


def test_secrets_come_from_the_env_file_and_none_is_committed():
    example = env_example()
    raw = COMPOSE.read_text()
    # a variable without a default must be in .env.example, or `docker compose up` stops on it
    for name in compose_variables():
        if not re.search(r"\$\{" + name + r":?-", raw):
            assert name in example, f"${{{name}}} is used in compose.yaml but missing from .env.example"
    secret_like = [k for k in example if re.search(r"PASSWORD|SECRET", k)]
    assert secret_like and all(example[k] == "" for k in secret_like), "placeholders only, no values"
    for name in secret_like:
        assert re.search(r"\$\{" + name + r":\?", raw), f"compose must refuse to start without {name}"
    with pytest.raises(KeyError, match="compose needs"):  # an unfilled .env stops compose
        interpolate(compose_raw(), example)
    for name, service in compose_raw()["services"].items():
        for key, value in compose_env(service).items():
            if re.search(r"PASSWORD|SECRET", key):
                assert value.startswith("${"), f"{name}.{key} is a literal"
            if key.endswith("DATABASE_URL"):
                assert urlsplit(value).password.startswith("${"), f"{name}.{key} holds a literal password"
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/.env"], cwd=PROJECT_ROOT)
    assert ignored.returncode == 0, "deploy/.env must be git-ignored"
    assert ENV_EXAMPLE.exists()
