"""``[interactions]`` in wisp.toml."""

from __future__ import annotations

from typing import Any

import attrs

from wisp.config import positive


def _hex_key(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value and (len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value)):
        raise ValueError("must be the application's public key: 64 hex characters")


def _before_deadline(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 < value < 3:
        raise ValueError("must be above 0 and below Discord's 3 second deadline")


@attrs.frozen
class InteractionsConfig:
    """Discord's Interactions Endpoint, served by ``wisp serve-interactions``."""

    #: The application's public key (hex); also ``DISCORD_PUBLIC_KEY``.
    public_key: str = attrs.field(
        default="", validator=_hex_key, metadata={"env": "DISCORD_PUBLIC_KEY"}
    )
    host: str = "0.0.0.0"
    port: int = 8080
    #: The URL path Discord posts to (Developer Portal: Interactions Endpoint URL).
    path: str = "/interactions"
    #: Seconds a signature timestamp may be off (older requests are replays: 401).
    max_age: float = attrs.field(default=300.0, validator=positive)
    #: Seconds before an unanswered interaction is deferred (type 5, 6 for clicks).
    defer_after: float = attrs.field(default=2.5, validator=_before_deadline)
    #: Interaction ids remembered per replica when the idempotency plugin is off.
    dedupe_size: int = attrs.field(default=10_000, validator=positive)
