"""harmon_webhooks: what notifier signs verifies; anything else is a SignatureError with a reason."""

import json

import pytest

from harmon_webhooks import SignatureError, sign, verify

BODY = json.dumps({"id": "evt_1", "object": "event", "type": "order.confirmed"}).encode()
T = 1_800_000_000


def test_a_signed_payload_verifies_and_gives_the_event():
    header = sign(BODY, ["whsec_a"], T)
    assert header.startswith(f"t={T},v1=")
    assert verify(BODY, header, ["whsec_a"], now=T + 10) == {"id": "evt_1", "object": "event",
                                                             "type": "order.confirmed"}


def test_the_signature_is_hmac_sha256_of_t_dot_body():
    import hashlib
    import hmac
    expected = hmac.new(b"whsec_a", f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, ["whsec_a"], T) == f"t={T},v1={expected}"


def test_during_a_rotation_each_secret_verifies_on_its_own():
    header = sign(BODY, ["whsec_new", "whsec_old"], T)
    assert header.count("v1=") == 2
    assert verify(BODY, header, ["whsec_old"], now=T)["id"] == "evt_1"
    assert verify(BODY, header, ["whsec_new"], now=T)["id"] == "evt_1"
    assert verify(BODY, header, ["whsec_other", "whsec_new"], now=T)["id"] == "evt_1"


@pytest.mark.parametrize("payload,header,secrets,now,reason", [
    (BODY, sign(BODY, ["whsec_a"], T), ["whsec_b"], T, "no signature matches"),
    (BODY + b" ", sign(BODY, ["whsec_a"], T), ["whsec_a"], T, "no signature matches"),
    (BODY, sign(BODY, ["whsec_a"], T), ["whsec_a"], T + 301, "timestamp outside the tolerance"),
    (BODY, sign(BODY, ["whsec_a"], T), ["whsec_a"], T - 301, "timestamp outside the tolerance"),
    (BODY, "", ["whsec_a"], T, "no Harmon-Signature header"),
    (BODY, "v1=abc", ["whsec_a"], T, "no timestamp in the header"),
    (BODY, f"t={T}", ["whsec_a"], T, "no v1 signature in the header"),
    (BODY, f"t=x{T},v1=ab", ["whsec_a"], T, "no timestamp in the header"),
    (BODY, sign(BODY, ["whsec_a"], T), [], T, "no secret to verify with"),
    # a v0 (or any other scheme) is not accepted in place of v1
    (BODY, sign(BODY, ["whsec_a"], T).replace("v1=", "v0="), ["whsec_a"], T, "no v1 signature in the header"),
])
def test_what_does_not_verify_says_why(payload, header, secrets, now, reason):
    with pytest.raises(SignatureError) as refused:
        verify(payload, header, secrets, now=now)
    assert refused.value.reason == reason


def test_the_tolerance_is_a_parameter():
    header = sign(BODY, ["whsec_a"], T)
    assert verify(BODY, header, ["whsec_a"], tolerance_s=3600, now=T + 3000)["id"] == "evt_1"


def test_a_signed_body_that_is_not_a_json_object_is_refused():
    with pytest.raises(SignatureError, match="not a JSON object"):
        verify(b"[1]", sign(b"[1]", ["whsec_a"], T), ["whsec_a"], now=T)


def test_signing_needs_a_secret():
    with pytest.raises(ValueError):
        sign(BODY, [], T)
