"""Endpoint secrets at rest: AES-GCM with the deployment's key (HARMON_NOTIFIER_SECRETS_KEY), the endpoint id as
associated data so a sealed secret copied onto another endpoint's row does not open."""

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE = 12


class Sealer:
    def __init__(self, key: bytes):
        self._aead = AESGCM(key)

    def seal(self, secret: str, endpoint_id: str) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, secret.encode(), endpoint_id.encode())

    def open(self, sealed: bytes, endpoint_id: str) -> str:
        return self._aead.decrypt(sealed[:NONCE], sealed[NONCE:], endpoint_id.encode()).decode()

    def __repr__(self) -> str:  # never the key
        return "Sealer(<key>)"
