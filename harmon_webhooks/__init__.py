"""Harmon webhook signatures: what a receiver checks and what notifier signs with (docs/api.md, "Webhooks").

`Harmon-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">[,v1=…]` — one `v1` per secret that
is active (two during a rotation). Pure standard library: a storefront can vendor this one file.

    from harmon_webhooks import verify, SignatureError
    event = verify(await request.read(), request.headers["Harmon-Signature"], [secret])
"""

import hashlib
import hmac
import json
import time

__all__ = ["SignatureError", "sign", "verify"]


class SignatureError(ValueError):
    """The payload is not signed by any of the secrets: `reason` says why (for logs; answer 400)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _mac(payload: bytes, secret: str, t: int) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()


def sign(payload: bytes, secrets: list[str], t: int) -> str:
    """The `Harmon-Signature` header for `payload` at unix time `t`: one `v1=` per secret, in the order given."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    return ",".join([f"t={int(t)}"] + [f"v1={_mac(payload, s, int(t))}" for s in secrets])


def verify(payload: bytes, header: str, secrets: list[str], tolerance_s: int = 300, now: float | None = None) -> dict:
    """The event (the JSON body) when `header` carries a `v1` signature of `payload` by one of `secrets` made
    within `tolerance_s` of `now` (replays are refused after that); raises SignatureError otherwise.

    `payload` must be the raw body as received: re-serialized JSON changes the bytes and fails the check."""
    if not secrets:
        raise SignatureError("no secret to verify with")
    if not header:
        raise SignatureError("no Harmon-Signature header")
    t = None
    signatures = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            t = value
        elif key == "v1":
            signatures.append(value)
    if t is None or not t.isdigit():
        raise SignatureError("no timestamp in the header")
    if not signatures:
        raise SignatureError("no v1 signature in the header")
    now = time.time() if now is None else now
    if abs(now - int(t)) > tolerance_s:
        raise SignatureError("timestamp outside the tolerance")
    expected = [_mac(payload, s, int(t)) for s in secrets]
    # every pair compared, so the time taken says nothing about which secret or signature matched
    matched = False
    for sig in signatures:
        for mac in expected:
            matched |= hmac.compare_digest(sig.encode(), mac.encode())
    if not matched:
        raise SignatureError("no signature matches")
    try:
        event = json.loads(payload)
    except ValueError:
        raise SignatureError("the payload is not JSON") from None
    if not isinstance(event, dict):
        raise SignatureError("the payload is not a JSON object")
    return event
