"""Extra gateway instances on the test stack: the same database and broker, as behind a load balancer."""

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator

import aiohttp

from libs.stack.processes import free_port


@contextlib.asynccontextmanager
async def extra_gateway(stack, until, instance_id: str, env: dict[str, str] | None = None
                        ) -> AsyncIterator[aiohttp.ClientSession]:
    """Start `python -m services.gateway` as instance `instance_id`; yield a session on its base URL once it is
    ready; SIGTERM it afterwards (it must drain and exit 0). Its log is `<logs>/gateway-<instance_id>.log`."""
    port = free_port()
    full_env = {**stack.service_env("gateway"), "HARMON_INSTANCE_ID": instance_id, "HARMON_GATEWAY_PORT": str(port),
                **(env or {})}
    log = open(stack.logs_dir / f"gateway-{instance_id}.log", "ab")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.gateway", env=full_env,
                                                cwd=stack.data_dir, stdout=log, stderr=log)
    started = False
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", timeout=aiohttp.ClientTimeout(total=30)) as http:
            async def ready():
                try:
                    async with http.get("/readyz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False
            await until(ready, timeout=60, interval=0.1, message=f"gateway {instance_id} ready")
            started = True
            yield http
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 30)
            assert code == 0 or not started, f"gateway {instance_id} exited {code}: see its log"
        log.close()
