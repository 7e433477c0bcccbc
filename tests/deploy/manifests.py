"""What deploy/ tells a container runtime, read from the files themselves: the image (deploy/Dockerfile),
the compose file (with its .env) and the rendered Kubernetes overlay. Tests check these, and the
dynamic tests start the services with exactly the command, directory and environment found here."""
from __future__ import annotations

import json
import re
import secrets
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser
from dotenv import dotenv_values
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from libs.runtime.settings import ServiceSettings
from libs.stack.supervisor import SERVICES

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = PROJECT_ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
OVERLAY = DEPLOY / "k8s" / "overlays" / "example"
KUBECTL = shutil.which("kubectl")

# What `harmon migrate` reads (libs/stack/cli.py: run_migrate); it is no settings class.
MIGRATE_VARIABLES = frozenset({"HARMON_KAFKA_BOOTSTRAP", "HARMON_PARTITIONS",
                               *(f"HARMON_{s.upper()}_DATABASE_URL" for s in SERVICES)})


# -- settings ------------------------------------------------------------------------------------

def settings_class(service: str) -> type[BaseSettings]:
    module = __import__(f"services.{service}.config", fromlist=["Settings"])
    return module.Settings


def setting_names(cls: type[BaseSettings]) -> set[str]:
    """Every environment variable a pydantic settings class reads (upper case: it ignores case)."""
    prefix = cls.model_config.get("env_prefix", "")
    names: set[str] = set()
    for name, f in cls.model_fields.items():
        alias = f.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


@cache
def service_variables(service: str) -> frozenset[str]:
    return frozenset(setting_names(settings_class(service)))


# Read by every service (a ConfigMap all pods load may hold only these). The base class's own
# per-service fields (database_url, ...) get their HARMON_<SERVICE>_ prefix only in a subclass.
COMMON_VARIABLES = frozenset(n for n in setting_names(ServiceSettings) if n.startswith("HARMON_"))


def variables_read_by(command: list[str]) -> frozenset[str] | None:
    """The HARMON_* variables the process started by `command` reads; None if it is none of ours."""
    if command[:2] == ["harmon", "migrate"]:
        return MIGRATE_VARIABLES
    if len(command) == 3 and command[:2] == ["python", "-m"] and command[2].startswith("services."):
        service = command[2].split(".", 1)[1]
        return service_variables(service) if service in SERVICES else None
    return None


# -- the image -------------------------------------------------------------------------------------

@dataclass
class Image:
    """The final stage of deploy/Dockerfile, as a runtime sees it."""

    base_images: list[str]
    stages: int
    build_runs: list[str]
    final_runs: list[str]
    final_copies: list[str]
    env: dict[str, str]            # ENV, with $PATH left for the base image's
    workdir: str
    user: str
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: str
    exposed: list[str]
    files: dict[str, Path] = field(default_factory=dict)  # image path -> project file (COPY from the context)
    venv: str = ""  # the virtualenv the build stage made and the final stage copies


def _exec_form(value: str) -> list[str]:
    value = value.strip()
    return json.loads(value) if value.startswith("[") else ["/bin/sh", "-c", value]


@cache
def image() -> Image:
    parser = DockerfileParser(str(DOCKERFILE), env_replace=False)
    structure = [i for i in parser.structure if i["instruction"] != "COMMENT"]
    stage_starts = [n for n, i in enumerate(structure) if i["instruction"] == "FROM"]
    final = structure[stage_starts[-1]:]
    build = structure[:stage_starts[-1]]

    def last(name: str, default: str = "") -> str:
        values = [i["value"] for i in final if i["instruction"] == name]
        return values[-1] if values else default

    env: dict[str, str] = {}
    for i in final:
        if i["instruction"] == "ENV":
            for word in shlex.split(i["value"]):
                key, _, val = word.partition("=")
                env[key] = val
    files: dict[str, Path] = {}
    venv = ""
    copies = [i["value"] for i in final if i["instruction"] == "COPY"]
    for value in copies:
        words = [w for w in value.split() if not w.startswith("--")]
        if "--from=" in value:
            venv = words[-1]
            continue
        *sources, dest = words
        for source in sources:
            files[dest if not dest.endswith("/") else dest + Path(source).name] = PROJECT_ROOT / source
    return Image(
        base_images=[i["value"].split()[0] for i in structure if i["instruction"] == "FROM"],
        stages=len(stage_starts),
        build_runs=[i["value"] for i in build if i["instruction"] == "RUN"],
        final_runs=[i["value"] for i in final if i["instruction"] == "RUN"],
        final_copies=copies,
        env=env, workdir=last("WORKDIR", "/"), user=last("USER", "root"),
        entrypoint=_exec_form(last("ENTRYPOINT", "[]")), cmd=_exec_form(last("CMD", "[]")),
        healthcheck=last("HEALTHCHECK"), exposed=[i["value"] for i in final if i["instruction"] == "EXPOSE"],
        files=files, venv=venv,
    )


def health_port(env: dict[str, str], service: str) -> int:
    """The port a service serves /healthz, /readyz and /metrics on, under `env`."""
    name = "HARMON_GATEWAY_PORT" if service == "gateway" else f"HARMON_{service.upper()}_HEALTH_PORT"
    return int(env[name])


def health_host(env: dict[str, str], service: str) -> str:
    return env.get("HARMON_GATEWAY_HOST" if service == "gateway" else "HARMON_HEALTH_HOST", "127.0.0.1")


# -- compose ---------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def env_example() -> dict[str, str]:
    return {k: v or "" for k, v in dotenv_values(ENV_EXAMPLE).items()}


def filled_env() -> dict[str, str]:
    """deploy/.env as an operator makes it from .env.example: every empty value gets a fresh secret."""
    return {k: v or secrets.token_urlsafe(32) for k, v in env_example().items()}


def interpolate(value: Any, variables: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error} and $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        present = name in variables and (variables[name] != "" or not (op or "").startswith(":"))
        if present:
            return variables[name]
        if op in ("?", ":?"):
            raise KeyError(f"compose needs {name}: {arg}")
        return arg if op in ("-", ":-") else ""

    return _VARIABLE.sub(one, value)


def compose_variables() -> set[str]:
    """Every ${VAR} the compose file refers to."""
    return {m.group("name") for m in _VARIABLE.finditer(COMPOSE.read_text()) if m.group("name")}


def compose_raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # safe_load resolves the file's anchors and `<<` merges


def compose(variables: dict[str, str] | None = None) -> dict[str, Any]:
    return interpolate(compose_raw(), filled_env() if variables is None else variables)


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def harmon_services(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose services that run the image (the six services and migrate)."""
    return {name: s for name, s in spec["services"].items() if s.get("build") is not None}


# -- Kubernetes ------------------------------------------------------------------------------------

def render_overlay(overlay: Path = OVERLAY) -> str:
    if KUBECTL is None:
        raise FileNotFoundError("kubectl is not installed (it renders deploy/k8s with its built-in kustomize)")
    done = subprocess.run([KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {overlay} failed:\n{done.stderr}")
    return done.stdout


def objects(rendered: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload["spec"]["template"]["spec"]["containers"]


def argv(container: dict[str, Any], img: Image) -> list[str]:
    """What Kubernetes runs: `command` replaces the image's ENTRYPOINT, `args` its CMD."""
    if "command" in container:
        return [*container["command"], *container.get("args", [])]
    return [*img.entrypoint, *container.get("args", img.cmd)]


def command_of(container: dict[str, Any], img: Image) -> list[str]:
    """The program after the image's entrypoint script."""
    full = argv(container, img)
    return full[len(img.entrypoint):] if full[:len(img.entrypoint)] == img.entrypoint else full


def config_maps(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for d in find(docs, "ConfigMap")}


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container.get("ports", []) if p.get("name") == port)
