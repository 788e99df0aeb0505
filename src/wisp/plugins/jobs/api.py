"""What the jobs plugin's backends share, and what other plugins import.

A job is claimed under a *lease*: an owner, an expiry and a token that
changes on every claim.  Every write a worker makes about a job it holds
(heartbeat, complete, fail, release) carries the token, and a backend refuses
a write whose token is no longer current: a worker that stalled past its
lease, whose job was claimed again by another worker, cannot overwrite the
newer outcome.  Delivery is at least once: a job whose worker dies runs again
once its lease expires.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import attrs

__all__ = [
    "Job",
    "JobStatus",
    "JobsBackend",
    "NewJob",
    "dumps_payload",
]


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # failed and waiting for its next attempt (run_at)
    DEAD_LETTER = "dead_letter"


@attrs.frozen
class NewJob:
    """What ``enqueue`` writes; ``payload`` is JSON-ready."""

    id: str
    type: str
    payload: Any
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 5
    run_at: datetime | None = None  # None: now, by the backend's clock
    idempotency_key: str | None = None


@attrs.frozen
class Job:
    """A job as stored.  ``lease_token`` is set while it is running."""

    id: str
    type: str
    payload: Any
    queue: str
    priority: int
    status: JobStatus
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    updated_at: datetime
    idempotency_key: str | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    lease_token: str | None = None
    error: str | None = None
    result: Any = None
    finished_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
            elif isinstance(value, enum.Enum):
                out[key] = value.value
        return out


def dumps_payload(payload: Any) -> str:
    """JSON text of a payload; a value JSON cannot hold is a TypeError naming it."""
    try:
        return json.dumps(payload, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"job payload is not JSON: {exc}") from None


class JobsBackend(Protocol):
    """Storage of jobs.  Implementations: SQL (SQLite, PostgreSQL) and Redis.

    Times are the backend's own clock (the database's or Redis's), never a
    worker's, so workers on several machines agree on leases and ``run_at``.
    """

    async def enqueue(self, job: NewJob) -> tuple[Job, bool]:
        """Store ``job``; with an ``idempotency_key`` already used, return that job
        instead.  The flag says whether this call created it."""
        ...

    async def claim(
        self,
        worker: str,
        queues: Sequence[str],
        types: Sequence[str],
        limit: int,
        lease_seconds: float,
    ) -> list[Job]:
        """Take up to ``limit`` due jobs of ``types`` from ``queues`` (pending and
        due, or running with an expired lease), highest priority first, then
        oldest ``run_at``; each gets a new lease token and ``attempts + 1``.
        Never hands one job to two claimers with live leases."""
        ...

    async def heartbeat(
        self, worker: str, leases: Mapping[str, str], lease_seconds: float
    ) -> set[str]:
        """Extend the leases ``{job_id: token}``; return the ids whose lease was
        still this token's (the others were lost)."""
        ...

    async def complete(self, job_id: str, token: str, result: Any) -> bool:
        """Mark completed with ``result``; False if the lease was lost."""
        ...

    async def complete_many(self, done: Sequence[tuple[str, str, Any]]) -> set[str]:
        """:meth:`complete` for ``(job_id, token, result)`` triples in one write
        (a worker under load groups its completions); return the ids completed
        (the others' leases were lost)."""
        ...

    async def fail(self, job_id: str, token: str, error: str, retry_at: datetime | None) -> bool:
        """Record a failed attempt: due again at ``retry_at`` (status failed), or
        dead-lettered when ``retry_at`` is None.  False if the lease was lost."""
        ...

    async def release(self, job_id: str, token: str) -> bool:
        """Give a claimed job back unrun (shutdown): pending, due now, the attempt
        not counted.  False if the lease was lost."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def list(
        self,
        *,
        status: JobStatus | None = None,
        queue: str | None = None,
        type: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Newest first."""
        ...

    async def retry(self, job_id: str) -> Job | None:
        """Put a dead-lettered or failed job back to pending with its attempts
        reset; None if there is no such job.  A running or completed job is
        returned unchanged."""
        ...

    async def purge(self, *, status: JobStatus, older_than: datetime | None = None) -> int:
        """Delete finished jobs (completed or dead_letter) in ``status``; return
        how many."""
        ...

    async def counts(self) -> dict[str, int]:
        """Jobs per status."""
        ...

    async def wait_for_work(self, timeout: float) -> None:
        """Return when work may have arrived (a notification) or after
        ``timeout`` seconds, whichever is first."""
        ...

    async def close(self) -> None: ...
