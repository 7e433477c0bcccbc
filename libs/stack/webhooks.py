"""`harmon webhooks listen`: see signed webhook events arrive on this machine, as Stripe's CLI shows them.

It starts a small aiohttp receiver on 127.0.0.1 (a free port unless `--port`), registers it as a test-mode webhook
endpoint with the dev tenant's secret key (from the running `harmon dev`'s credentials.json, or `--api URL` with the
key in HARMON_API_KEY: never on the command line, where `ps` shows it), verifies each POST with
`harmon_webhooks.verify` and the endpoint's secret, prints it, optionally forwards it to `--forward-to URL` (the
same raw body and headers, so the application verifies the signature itself), and deletes the endpoint on Ctrl-C.
Test mode may use http://127.0.0.1 (docs/api.md, "Webhooks"); live mode may not, so this is test mode only.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets as random
import signal
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from libs.contracts.webhooks import EVENT_TYPES

from .admin_cli import EXIT_FAILED, EXIT_USAGE, CommandError, running_dev_credentials

PATH = "/webhooks"
API_KEY_ENV = "HARMON_API_KEY"  # with --api: the secret key (never an argument)
DESCRIPTION = "harmon webhooks listen"
FORWARD_TIMEOUT_S = 10.0  # as notifier's own delivery timeout
FORWARDED_HEADERS = ("Content-Type", "Harmon-Event-Id", "Harmon-Signature", "User-Agent")


@dataclass(frozen=True)
class Api:
    """Where to register, and with which (test-mode secret) key."""

    base_url: str
    secret_key: str


def find_api(args: argparse.Namespace) -> Api:
    """--api with HARMON_API_KEY, else the `harmon dev` running on --data-dir (default ./.harmon)."""
    if args.api:
        key = os.environ.get(API_KEY_ENV, "")
        if not key:
            raise CommandError(f"--api needs the secret key in {API_KEY_ENV}", EXIT_USAGE)
        return Api(args.api.rstrip("/"), key)
    data_dir = Path(args.data_dir).absolute()
    hint = f"start it with: harmon dev --data-dir {data_dir} (or give --api URL with the key in {API_KEY_ENV})"
    credentials_path = running_dev_credentials(data_dir, hint)
    try:
        credentials = json.loads(credentials_path.read_text())
        return Api(credentials["base_url"].rstrip("/"), credentials["secret_key"])
    except (OSError, ValueError, KeyError) as exc:
        raise CommandError(f"cannot read the API and key from {credentials_path}: {exc}") from None


def parse_events(raw: list[str] | None) -> list[str]:
    """`--events order.confirmed,invoice.issued` (repeatable); none: every event ("*")."""
    wanted = [e.strip() for item in raw or [] for e in item.split(",") if e.strip()]
    unknown = [e for e in wanted if e != "*" and e not in EVENT_TYPES]
    if unknown:
        raise CommandError(f"unknown event types {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)} or *",
                           EXIT_USAGE)
    return list(dict.fromkeys(wanted)) or ["*"]


def _api_error(what: str, status: int, body: Any) -> CommandError:
    error = body.get("error", {}) if isinstance(body, dict) else {}
    detail = f"{error.get('code') or status}: {error.get('message') or body}"
    return CommandError(f"{what}: {status} {detail}", EXIT_FAILED)


def describe(event: dict[str, Any]) -> str:
    """One line per event: when, type, event id, and the object it is about."""
    obj = (event.get("data") or {}).get("object") or {}
    about = " ".join(str(x) for x in (obj.get("object"), obj.get("id"), obj.get("status")) if x)
    return f"{datetime.now(UTC):%H:%M:%S}  {event.get('type', '?'):<26} {event.get('id', '?')}  {about}".rstrip()


class Listener:
    """The receiver, its registration, and the endpoint's removal. `start()` then `stop()`; or `async with`."""

    def __init__(self, api: Api, events: list[str], *, port: int = 0, forward_to: str | None = None,
                 as_json: bool = False, out: TextIO | None = None) -> None:
        self.api, self.events, self.port, self.forward_to = api, events, port, forward_to
        self.as_json = as_json
        self.out = out or sys.stdout
        self.endpoint_id: str | None = None
        self.secret: str | None = None
        self.seen: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S))
        app = web.Application()
        app.router.add_post(PATH, self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        try:
            await site.start()
            self.port = self._runner.addresses[0][1]  # the port the OS picked for 0
            await self._register()
        except BaseException:
            await self.stop()
            raise

    async def _register(self) -> None:
        assert self._http is not None
        body = {"url": self.url, "enabled_events": self.events, "description": DESCRIPTION}
        headers = {"Authorization": f"Bearer {self.api.secret_key}", "Idempotency-Key": f"listen-{random.token_hex(8)}"}
        try:
            async with self._http.post(f"{self.api.base_url}/v1/webhook_endpoints", json=body, headers=headers) as r:
                answer = await r.json(content_type=None)
                status = r.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise CommandError(f"cannot reach the API at {self.api.base_url}: {type(exc).__name__}: {exc}") from None
        if status != 201 or not isinstance(answer, dict) or "secret" not in answer:
            raise _api_error("registering the endpoint", status, answer)
        self.endpoint_id, self.secret = answer["id"], answer["secret"]

    async def _receive(self, request: web.Request) -> web.Response:
        from harmon_webhooks import SignatureError, verify  # noqa: PLC0415 (the receiver helper the README names)

        payload = await request.read()
        if self.secret is None:  # not registered yet: nothing can be signed for us
            return web.json_response({"error": "not registered yet"}, status=503)
        try:
            event = verify(payload, request.headers.get("Harmon-Signature", ""), [self.secret])
        except SignatureError as exc:
            self._print(f"{datetime.now(UTC):%H:%M:%S}  refused a POST: the signature does not verify ({exc})")
            return web.json_response({"error": f"signature: {exc}"}, status=400)
        again = event.get("id") in self.seen
        self.seen.add(event.get("id"))
        line = json.dumps(event, separators=(",", ":")) if self.as_json else \
            describe(event) + ("  (again)" if again else "")
        if self.forward_to:
            status = await self._forward(payload, request.headers)
            if not self.as_json:
                line += f"  -> {self.forward_to} {status}"
            self._print(line)
            return web.json_response({"received": True, "forwarded": status})
        self._print(line)
        return web.json_response({"received": True})

    async def _forward(self, payload: bytes, headers: Any) -> str:
        """POST the same bytes and signature on; the answer's status (or the error's class) is printed."""
        assert self._http is not None
        try:
            async with self._http.post(self.forward_to, data=payload, allow_redirects=False,
                                       headers={h: headers[h] for h in FORWARDED_HEADERS if h in headers}) as r:
                return str(r.status)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return type(exc).__name__

    async def stop(self) -> None:
        """Delete the endpoint (notifier cancels what was pending for it), then stop the receiver."""
        try:
            if self.endpoint_id is not None and self._http is not None:
                try:
                    async with self._http.delete(f"{self.api.base_url}/v1/webhook_endpoints/{self.endpoint_id}",
                                                 headers={"Authorization": f"Bearer {self.api.secret_key}"}) as r:
                        if r.status not in (200, 404):
                            self._print(f"could not delete {self.endpoint_id}: {r.status} {await r.text()}")
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    self._print(f"could not delete {self.endpoint_id}: {type(exc).__name__}: {exc}")
                self.endpoint_id = None
        finally:
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
            if self._http is not None:
                await self._http.close()
                self._http = None

    async def __aenter__(self) -> "Listener":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def run_listen(args: argparse.Namespace) -> int:
    try:
        api = find_api(args)
        events = parse_events(args.events)
        listener = Listener(api, events, port=args.port, forward_to=args.forward_to, as_json=args.json)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await listener.start()
    except CommandError as exc:
        print(f"harmon webhooks listen: {exc}", file=sys.stderr)
        return exc.code
    except OSError as exc:  # the port taken
        print(f"harmon webhooks listen: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        # on stderr, so stdout is only the events (one JSON object a line with --json)
        print(f"Ready: {listener.url} is webhook endpoint {listener.endpoint_id} (test mode) for "
              f"{', '.join(events)}; each verified event is printed"
              + (f" and forwarded to {args.forward_to}" if args.forward_to else "")
              + ". Ctrl-C deletes the endpoint and stops.", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await listener.stop()
    print("harmon webhooks listen: endpoint deleted, stopped", file=sys.stderr, flush=True)
    return 0


def add_webhooks_parsers(commands: argparse._SubParsersAction) -> None:
    hooks = commands.add_parser("webhooks", help="webhook events on this machine: `listen`",
                                description="Signed webhook events (docs/api.md, \"Webhooks\").")
    actions = hooks.add_subparsers(dest="webhooks", required=True, metavar="ACTION")
    listen = actions.add_parser(
        "listen", help="a local receiver, registered as a test-mode endpoint: prints each verified event",
        description="Starts a receiver on 127.0.0.1, registers it (test mode) with the running `harmon dev`'s "
                    "secret key, verifies and prints each event, deletes the endpoint on Ctrl-C. Exit 2: no "
                    "`harmon dev` running, or an unknown event type; 1: the API refused or could not be reached.")
    listen.add_argument("--events", action="append", metavar="TYPE[,TYPE]",
                        help=f"only these event types (repeatable; default every one: *): {', '.join(EVENT_TYPES)}")
    listen.add_argument("--forward-to", metavar="URL",
                        help="also POST each verified event (the same body and Harmon-Signature) to your own "
                             "receiver, e.g. http://127.0.0.1:4242/webhooks")
    listen.add_argument("--port", type=int, default=0, metavar="N", help="the receiver's port (default: a free one)")
    listen.add_argument("--json", action="store_true", help="print each event as one JSON object a line")
    listen.add_argument("--data-dir", default=".harmon", metavar="DIR",
                        help="the running `harmon dev`'s data dir (default: .harmon)")
    listen.add_argument("--api", metavar="URL", help=f"another gateway (the secret key in {API_KEY_ENV})")
    listen.set_defaults(run=run_listen)
