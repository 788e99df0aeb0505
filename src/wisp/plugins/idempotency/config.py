"""``[idempotency]``: where keys live, how long claims and results last."""

from __future__ import annotations

from typing import Literal

import attrs

from wisp.config import not_negative, positive

__all__ = ["IdempotencyConfig"]


@attrs.frozen
class IdempotencyConfig:
    """``[idempotency]``."""

    #: "sql": the storage plugin's database (SQLite or PostgreSQL); "redis": the redis plugin's.
    backend: Literal["sql", "redis"] = "sql"
    #: How long a completed operation's result answers repeats (and a failed one is kept).
    ttl_seconds: float = attrs.field(default=86_400.0, validator=positive)
    #: How long a claim holds without a heartbeat: past it, a crashed owner's key is taken over.
    lease_seconds: float = attrs.field(default=60.0, validator=positive)
    #: Renew a running claim every lease_seconds / 3 while its operation runs.
    heartbeat: bool = True
    #: Seconds between scheduled cleanups of expired keys (the jobs plugin's scheduler); 0: off.
    cleanup_seconds: float = attrs.field(default=3600.0, validator=not_negative)
    #: Commands the middleware guards: "marked" (metadata idempotent=...) or "all".
    commands: Literal["marked", "all"] = "marked"
    #: How long the middleware remembers a command's reply (default: ttl_seconds).
    command_ttl_seconds: float | None = None
    #: A repeat of the same interaction or message (a replay, a second process) that finds
    #: the first still running waits this long for its result before answering "still
    #: working": Discord takes one answer per interaction, and the first's is the real one.
    repeat_wait_seconds: float = attrs.field(default=1.5, validator=not_negative)
    #: The reply to a repeat that arrives while the first delivery still runs.
    in_progress_message: str = (
        "Still working on it: this request is already running. Try again in a moment."
    )
    #: Key prefix of the Redis backend (bots sharing one Redis use different ones).
    redis_prefix: str = "wisp:idem:"

    def __attrs_post_init__(self) -> None:
        if self.command_ttl_seconds is not None and not self.command_ttl_seconds > 0:
            raise ValueError("command_ttl_seconds must be greater than 0")
