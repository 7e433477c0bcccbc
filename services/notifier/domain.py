"""Notifier rules, free of I/O: public event names and bodies, webhook endpoints (URL rule, secrets, rotation,
disable rule) and the delivery schedule (docs/api.md, "Webhooks")."""

import base64
import ipaddress
import random
import secrets as _secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from libs.contracts.base import Rejection
from libs.contracts.errors import ErrorCode
from libs.contracts.ids import EVENT, new_id
from libs.contracts import public
from libs.contracts.webhooks import EventView, WebhookEndpointView

# Internal event type → the public name subscribers see (docs/api.md, "Events"). The others on these topics
# (FulfilmentDelivered, InvoiceDueDateSet, PaymentApplied, PaymentUnapplied) are for the ERP and credit only.
PUBLIC_NAMES = {
    "OrderConfirmed": "order.confirmed",
    "OrderPartiallyFulfilled": "order.partially_fulfilled",
    "OrderFulfilled": "order.fulfilled",
    "OrderDelivered": "order.delivered",
    "OrderCancelled": "order.cancelled",
    "InvoiceIssued": "invoice.issued",
    "InvoicePaid": "invoice.paid",
    "InvoiceVoided": "invoice.voided",
    "InvoiceOverdue": "invoice.overdue",
}
ENDPOINT_DISABLED = "webhook_endpoint.disabled"


def public_event_type(message_type: str) -> str | None:
    """`order.confirmed` for OrderConfirmed; None for events subscribers are not shown."""
    return PUBLIC_NAMES.get(message_type)


@dataclass(frozen=True)
class PublicEvent:
    """An event as subscribers will see it (`evt_…`), kept for /v1/events and webhook deliveries; one per
    (aggregate, version, type), so a redelivered or re-sent internal event is recorded once.
    `data` is `{"object": <the public object>}` (libs/contracts/public.py)."""

    id: str
    type: str
    aggregate_id: str
    aggregate_version: int
    data: Mapping[str, Any]
    occurred_at: datetime
    received_at: datetime

    @classmethod
    def of(cls, message_type: str, aggregate_id: str, aggregate_version: int | None, data: Mapping[str, Any],
           occurred_at: datetime, received_at: datetime) -> "PublicEvent":
        """The public event for an internal one; a type subscribers are not shown is a bug of the caller."""
        public = public_event_type(message_type)
        if public is None:
            raise ValueError(f"{message_type} is not a public event")
        return cls(new_id(EVENT), public, aggregate_id, aggregate_version or 1, data, occurred_at, received_at)

    def view(self) -> EventView:
        return EventView(event_id=self.id, event_type=self.type, created_at=self.occurred_at, data=dict(self.data))

    def body(self, livemode: bool) -> dict[str, Any]:
        """The event object: what GET /v1/events/{id} shows and what a webhook POSTs (one rendering, the API's)."""
        return public.event(self.view(), livemode)


# --- the URL rule --------------------------------------------------------------------------------------------

# host → every address it resolves to (a stand-in in tests; getaddrinfo in the service)
Resolver = Callable[[str], Awaitable[Sequence[str]]]
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def is_public_address(address: str) -> bool:
    """An address a live-mode webhook may reach: globally routable unicast, also when it hides an IPv4 address
    (IPv4-mapped, 6to4, Teredo, NAT64)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if ip in NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(e is not None and not is_public_address(str(e)) for e in embedded):
            return False
    # is_global is False for private, loopback, link-local, reserved, unspecified and shared 100.64/10
    return ip.is_global and not ip.is_multicast


def _refuse(message: str) -> Rejection:
    return Rejection(ErrorCode.URL_INVALID, message, "url")


def split_url(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise _refuse("is not a URL") from None
    try:
        port = parts.port
    except ValueError:
        raise _refuse("the URL's port is not a number") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refuse("must be an http:// or https:// URL with a host")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def checked_addresses(url: str, livemode: bool, resolve: Resolver) -> list[str]:
    """The addresses a delivery to `url` may connect to (the connection goes to these, not to a second lookup:
    DNS can change between the check and the connect). Live mode: https only, and every address public.
    Test mode: http too, and loopback/private allowed (tests and harmon dev receive on 127.0.0.1)."""
    scheme, host, _ = split_url(url)
    if livemode and scheme != "https":
        raise _refuse("a live-mode endpoint must use https")
    try:
        addresses = [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        try:
            addresses = list(await resolve(host))
        except OSError:
            raise _refuse(f"the host {host} does not resolve") from None
    if not addresses:
        raise _refuse(f"the host {host} does not resolve")
    if livemode and not all(is_public_address(a) for a in addresses):
        raise _refuse("a live-mode endpoint must resolve to public addresses only (not loopback, private, "
                      "link-local, multicast or reserved)")
    return addresses


async def check_url(url: str, livemode: bool, resolve: Resolver) -> None:
    """At create/update: in test mode any host will do (it need not resolve yet); live mode as at delivery."""
    if livemode:
        await checked_addresses(url, livemode, resolve)
    else:
        split_url(url)


def check_event_types(types: Sequence[str]) -> list[str]:
    """Deduplicated in order; "*" alone stands for every type."""
    out = list(dict.fromkeys(types))
    return ["*"] if "*" in out else out


# --- endpoints and their secrets -------------------------------------------------------------------------------

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.urlsafe_b64encode(_secrets.token_bytes(32)).decode().rstrip("=")


@dataclass(frozen=True)
class Secret:
    value: str
    created_at: datetime
    expires_at: datetime | None = None  # set by a rotation: it keeps signing beside the new one until then

    def active(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass(frozen=True)
class Endpoint:
    """A webhook endpoint (`we_…`). `failing_since`: the first failed attempt since the last delivered one
    (the disable rule counts from it). `version`: +1 per change, the aggregate version of its events."""

    id: str
    url: str
    enabled_events: tuple[str, ...]
    description: str | None
    status: str  # enabled | disabled
    created_at: datetime
    secrets: tuple[Secret, ...] = ()
    version: int = 1
    failing_since: datetime | None = None

    @classmethod
    def create(cls, endpoint_id: str, url: str, enabled_events: Sequence[str], description: str | None,
               now: datetime) -> "Endpoint":
        return cls(endpoint_id, url, tuple(check_event_types(enabled_events)), description, "enabled", now,
                   (Secret(new_secret(), now),))

    def subscribed(self, event_type: str) -> bool:
        return self.status == "enabled" and ("*" in self.enabled_events or event_type in self.enabled_events)

    def signing_secrets(self, now: datetime) -> list[str]:
        """Newest first; expired ones are not used."""
        return [s.value for s in sorted(self.secrets, key=lambda s: s.created_at, reverse=True) if s.active(now)]

    def updated(self, *, url: str | None = None, enabled_events: Sequence[str] | None = None,
                description: str | None = None, disabled: bool | None = None) -> "Endpoint":
        changes: dict[str, Any] = {}
        if url is not None:
            changes["url"] = url
        if enabled_events is not None:
            changes["enabled_events"] = tuple(check_event_types(enabled_events))
        if description is not None:
            changes["description"] = description
        if disabled is not None:
            changes["status"] = "disabled" if disabled else "enabled"
            if not disabled:
                changes["failing_since"] = None  # resumed: the window starts again
        return replace(self, **changes, version=self.version + 1) if changes else self

    def rotated(self, now: datetime, expires_in_s: int) -> "Endpoint":
        """A new secret; the current ones stop at now + expires_in_s (0: now); expired ones are dropped."""
        until = now + timedelta(seconds=expires_in_s)
        kept = tuple(replace(s, expires_at=min(s.expires_at or until, until)) for s in self.secrets if s.active(now))
        kept = tuple(s for s in kept if s.active(now))
        return replace(self, secrets=(Secret(new_secret(), now), *kept), version=self.version + 1)

    def view(self, secret: str | None = None) -> WebhookEndpointView:
        """`secret`: only for the create and rotate answers."""
        return WebhookEndpointView(endpoint_id=self.id, url=self.url, enabled_events=list(self.enabled_events),
                                   description=self.description, status=self.status, created_at=self.created_at,
                                   secret=secret)

    def public(self, livemode: bool) -> dict[str, Any]:
        """The endpoint as the API shows it, never with a secret (data.object of webhook_endpoint.disabled)."""
        return public.webhook_endpoint(self.view(), livemode)

    def after_attempt(self, delivered: bool, now: datetime, disable_after_s: float) -> "Endpoint":
        """The disable rule: every attempt failed for `disable_after_s` → disabled (a change: version + 1)."""
        if delivered:
            return replace(self, failing_since=None) if self.failing_since else self
        since = self.failing_since or now
        if self.status == "enabled" and (now - since).total_seconds() >= disable_after_s:
            return replace(self, failing_since=since, status="disabled", version=self.version + 1)
        return replace(self, failing_since=since) if self.failing_since is None else self


def disabled_event(endpoint: Endpoint, livemode: bool, now: datetime) -> PublicEvent:
    return PublicEvent(new_id(EVENT), ENDPOINT_DISABLED, endpoint.id, endpoint.version,
                       {"object": endpoint.public(livemode)}, now, now)


# --- delivery -------------------------------------------------------------------------------------------------

RETRYABLE = "retrying"


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: delivered, retrying (next_attempt_at set) or failed."""

    outcome: str
    next_attempt_at: datetime | None = None


def classify(status_code: int | None) -> str:
    """delivered for a 2xx; retry for no answer, 429 or 5xx; failed for any other answer (3xx included:
    redirects are never followed)."""
    if status_code is None or status_code == 429 or status_code >= 500:
        return RETRYABLE
    if 200 <= status_code < 300:
        return "delivered"
    return "failed"


def retry_delay(attempt: int, schedule: Sequence[float], rng: random.Random | None = None) -> float:
    """The wait after failed attempt number `attempt` (1-based): the schedule's entry (the last repeats), with
    ±20% jitter so endpoints that failed together are not retried together."""
    base = schedule[min(attempt, len(schedule)) - 1]
    return base * (rng or random).uniform(0.8, 1.2)


def outcome_of(status_code: int | None, attempt: int, first_queued_at: datetime, now: datetime,
               schedule: Sequence[float], max_age_s: float, rng: random.Random | None = None) -> Outcome:
    kind = classify(status_code)
    if kind != RETRYABLE:
        return Outcome(kind)
    at = now + timedelta(seconds=retry_delay(attempt, schedule, rng))
    if (at - first_queued_at).total_seconds() > max_age_s:
        return Outcome("failed")  # retried as long as the mode allows
    return Outcome(RETRYABLE, at)


@dataclass(frozen=True)
class Delivery:
    """One event owed to one endpoint: pending until delivered, failed or cancelled."""

    id: int
    endpoint_id: str
    event_id: str
    event_type: str
    attempts: int
    created_at: datetime
    status: str = "pending"
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class Attempt:
    """One try (`wda_…`), listed at GET /v1/webhook_endpoints/{id}/deliveries."""

    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    attempt: int
    attempted_at: datetime
    outcome: str
    latency_ms: int
    status_code: int | None = None
    error: str | None = None
    response_body: str = ""
    next_attempt_at: datetime | None = None
    extra: dict = field(default_factory=dict, compare=False)
