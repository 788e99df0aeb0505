"""``[jobs]``: where jobs live and how workers treat them."""

from __future__ import annotations

from typing import Literal

import attrs

from wisp.config import positive

__all__ = ["JobsConfig"]


@attrs.frozen
class JobsConfig:
    """``[jobs]``."""

    #: "sql": the storage plugin's database (SQLite or PostgreSQL); "redis": the redis plugin's.
    backend: Literal["sql", "redis"] = "sql"
    #: Queues a worker takes jobs from when ``--queues`` is not given.
    queues: list[str] = attrs.field(factory=lambda: ["default"])
    #: Jobs a worker runs at once when ``--concurrency`` is not given.
    concurrency: int = attrs.field(default=10, validator=positive)
    #: How long a claimed job is a worker's before others may take it again.
    lease_seconds: float = attrs.field(default=60.0, validator=positive)
    #: How often a worker renews its leases (well inside ``lease_seconds``).
    heartbeat_seconds: float = attrs.field(default=15.0, validator=positive)
    #: How long an idle worker waits before looking again (notifications wake it sooner).
    poll_seconds: float = attrs.field(default=1.0, validator=positive)
    #: Attempts for job types that do not set ``max_attempts``.
    max_attempts: int = attrs.field(default=5, validator=positive)
    #: Retry backoff: ``backoff_seconds * 2**(attempt-1)``, capped, with full jitter.
    backoff_seconds: float = attrs.field(default=1.0, validator=positive)
    max_backoff_seconds: float = attrs.field(default=300.0, validator=positive)
    #: On SIGTERM, how long running jobs may take to finish before they are released.
    shutdown_seconds: float = attrs.field(default=30.0, validator=positive)
    #: Run the scheduler in workers (each firing is enqueued once, whatever the count).
    scheduler: bool = True
    #: Key prefix of the Redis backend (bots sharing one Redis use different ones).
    redis_prefix: str = "wisp:jobs:"
    #: Also run a worker inside the process that runs the bot (``wisp run``, online or
    #: offline, and the test fixtures): one process for a small bot, no ``wisp worker``.
    embedded_worker: bool = False

    def __attrs_post_init__(self) -> None:
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(
                "heartbeat_seconds must be shorter than lease_seconds, or leases lapse "
                "while their jobs run"
            )
