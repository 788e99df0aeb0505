"""``[sagas]``: where runs are journaled and how they are leased and retried."""

from __future__ import annotations

from typing import Literal

import attrs

from wisp.config import positive

__all__ = ["SagasConfig"]


@attrs.frozen
class SagasConfig:
    """``[sagas]``."""

    #: "sql": the storage plugin's database (SQLite or PostgreSQL); "redis": the redis plugin's.
    backend: Literal["sql", "redis"] = "sql"
    #: How long a run is its owner's without a heartbeat before recovery may take it.
    lease_seconds: float = attrs.field(default=30.0, validator=positive)
    #: How often an owner renews its lease (well inside ``lease_seconds``).
    heartbeat_seconds: float = attrs.field(default=10.0, validator=positive)
    #: How often the recovery scan looks for runs whose owner was lost.
    recovery_seconds: float = attrs.field(default=60.0, validator=positive)
    #: Attempts of a step that does not set its own.
    attempts: int = attrs.field(default=3, validator=positive)
    #: Attempts of a compensation that does not set its own.
    compensation_attempts: int = attrs.field(default=5, validator=positive)
    #: Retry backoff: ``backoff_seconds * 2**(attempt-1)``, capped, with full jitter.
    backoff_seconds: float = attrs.field(default=1.0, validator=positive)
    max_backoff_seconds: float = attrs.field(default=60.0, validator=positive)
    #: A step (or compensation) whose process died this many times while it ran
    #: alone in it is given up: the run compensates (or needs attention),
    #: instead of crashing every process that recovers it.  A death while other
    #: steps ran beside it is not counted (any of them may be the culprit): it
    #: makes the step suspect, and a suspect step's attempts run alone in their
    #: process.  So a step that kills its process every time runs at most
    #: 1 + max_interruptions times, and healthy steps beside it are not blamed.
    max_interruptions: int = attrs.field(default=5, validator=positive)
    #: How long a suspect step's attempt waits for the other attempts in its
    #: process to finish (and any attempt waits for one running alone) before it
    #: runs beside them anyway, so that a step that waits for another run's step
    #: cannot deadlock the process.  A suspect step that ran beside others this
    #: way has its interruption counted.
    exclusive_wait: float = attrs.field(default=30.0, validator=positive)
    #: Finished runs older than this many hours are deleted by the cleanup schedule.
    retention_hours: float = attrs.field(default=24.0 * 7, validator=positive)
    #: Run sagas on job workers when the jobs plugin is loaded (else in the
    #: process that started them, as background tasks).
    use_jobs: bool = True
    #: PostgreSQL: make every progress write wait for the WAL flush (the
    #: default).  Off (faster), a PostgreSQL server crash may forget the last
    #: moments of progress: those runs are recovered and re-run their last step
    #: or compensation, as after a crash of their process, so a completed step
    #: or a compensation may run twice.  Creating, claiming, releasing and
    #: finishing runs always wait, so a final state once seen never changes.
    sync_progress: bool = True
    #: Key prefix of the Redis journal (bots sharing one Redis use different ones).
    redis_prefix: str = "wisp:sagas:"

    def __attrs_post_init__(self) -> None:
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(
                "heartbeat_seconds must be shorter than lease_seconds, or leases lapse "
                "while their runs go on"
            )
