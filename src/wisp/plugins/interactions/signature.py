"""Ed25519 request signatures, as Discord signs Interactions Endpoint requests.

Discord signs ``timestamp + body`` with its application key and sends the hex
signature in ``X-Signature-Ed25519`` and the timestamp (Unix seconds) in
``X-Signature-Timestamp``.  ``cryptography`` does the check (PyNaCl is pinned
below 1.6 by discord.py's voice extra); it is imported only when a verifier is
built, so the rest of Wisp never needs it.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["BadSignature", "Verifier"]


class BadSignature(Exception):
    """Why a request is refused (the text goes to the log, never to the caller)."""


class Verifier:
    """Checks one application's signatures; ``max_age`` bounds a timestamp's age (replays)."""

    def __init__(self, public_key_hex: str, *, max_age: float = 300.0) -> None:
        try:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        except ImportError:
            raise RuntimeError(
                "the interactions endpoint checks signatures with the cryptography package, "
                "which is not installed: pip install 'wisp-framework[interactions]'"
            ) from None

        try:
            raw = bytes.fromhex(public_key_hex)
            self._key: Any = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise ValueError(
                "[interactions] public_key must be the application's 64 hex character "
                "public key (Developer Portal, General Information)"
            ) from None
        self.max_age = max_age

    def verify(
        self, signature: str | None, timestamp: str | None, body: bytes, now: float | None = None
    ) -> None:
        """Return if the request is Discord's and fresh; else raise :class:`BadSignature`."""
        from cryptography.exceptions import InvalidSignature

        if not signature or not timestamp:
            raise BadSignature("missing X-Signature-Ed25519 or X-Signature-Timestamp")
        try:
            sent = int(timestamp)
            sig = bytes.fromhex(signature)
        except ValueError:
            raise BadSignature("malformed signature headers") from None
        current = time.time() if now is None else now
        if abs(current - sent) > self.max_age:
            raise BadSignature(f"stale timestamp ({current - sent:.0f}s off)")
        try:
            self._key.verify(sig, timestamp.encode() + body)
        except InvalidSignature:
            raise BadSignature("signature does not match") from None
