"""What other plugins import to use distributed locks; importing it registers nothing.

``app.services.get("locks").acquire(name, ttl=..., timeout=...)`` gives a
:class:`Lock`.  Its ``token`` is a *fencing token*: a number issued in the
same atomic step as the acquire, larger than every token issued for that name
before.  Storage that records the highest token it has seen (see
``wisp.plugins.locks.fencing``) can then refuse a write from a holder whose
lease ran out while it was paused, even though that holder still believes it
holds the lock.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import attrs

__all__ = [
    "Lock",
    "LockError",
    "LockInfo",
    "LockLost",
    "LockStats",
    "LockTimeout",
    "StaleToken",
]


class LockError(Exception):
    """Base of the locks plugin's errors."""


class LockTimeout(LockError, TimeoutError):
    """The lock was not acquired within the caller's ``timeout``."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        super().__init__(f"lock {name!r} was not acquired within {timeout:g}s")


class LockLost(LockError):
    """The lease ended (TTL passed, or another holder took the lock) before this
    holder released or extended it: its work may have overlapped another's."""

    def __init__(self, name: str, token: int, action: str) -> None:
        self.name = name
        self.token = token
        self.action = action
        super().__init__(
            f"lock {name!r} (token {token}) was lost before {action}: its lease expired "
            "or another holder has it"
        )


class StaleToken(LockLost):
    """A fenced write was refused: a newer holder's token already went through the fence."""

    def __init__(self, name: str, token: int, current: int | None) -> None:
        self.current = current
        super().__init__(name, token, "a fenced write")
        self.args = (
            f"fenced write for lock {name!r} refused: token {token} is older than "
            f"token {current} already seen",
        )


@attrs.frozen
class LockInfo:
    """A lock as the backend sees it: for ``wisp locks`` and health."""

    name: str
    token: int
    holder: str
    #: Seconds left on the lease, by the backend's clock.
    expires_in: float


@attrs.define
class LockStats:
    """Counters kept by the service since it started (shown by ``wisp doctor``)."""

    acquires: int = 0
    #: Acquires that found the lock held and had to wait.
    waits: int = 0
    wait_seconds: float = 0.0
    max_wait_seconds: float = 0.0
    timeouts: int = 0
    extends: int = 0
    #: Releases or extends that found the lease gone (``LockLost``).
    lost: int = 0


@runtime_checkable
class Lock(Protocol):
    """A held lock.  Use it as ``async with locks.acquire(...) as lock``."""

    name: str
    #: The fencing token: monotonic per name, issued atomically with the acquire.
    token: int
    #: The holder's identity as stored (host:pid:serial).
    holder: str

    @property
    def lost(self) -> bool:
        """True once an extend or release found the lease gone."""
        ...

    @property
    def remaining(self) -> float:
        """Seconds the lease is known to last, by this process's monotonic clock
        (counted from before the request that set it, so never overstated)."""
        ...

    async def extend(self, ttl: float | None = None) -> None:
        """Reset the lease to ``ttl`` seconds from now; ``LockLost`` if it is gone."""
        ...

    async def release(self) -> None:
        """Give the lock up; ``LockLost`` if the lease had already ended."""
        ...

    async def fence(self, session: Any) -> None:
        """Pass the SQL fence in the caller's transaction (see ``fencing.fence_sql``)."""
        ...
