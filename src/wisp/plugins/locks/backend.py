"""What the service asks of a lock backend (memory, Redis, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import attrs

from wisp.plugins.locks.api import LockInfo

__all__ = ["Attempt", "Backend", "Wake"]

#: Called with a lock name when a release may let a waiter in; True when this
#: process had a waiter to wake.
Wake = Callable[[str], bool]


@attrs.frozen
class Attempt:
    """One try at a lock.  ``token`` is None when someone else holds it."""

    token: int | None
    #: How long the caller should wait (for a wake-up) before trying again.
    retry_after: float = 0.0
    #: Seconds left on the current holder's lease, when known.
    lease_left: float | None = None
    #: The backend's state for the held lock (PostgreSQL: its connection).
    handle: Any = None
    #: The backend waited for a holder (in the server) before answering.
    waited: bool = False


class Backend(Protocol):
    """A place locks live.  Tokens are issued atomically with the acquire."""

    kind: str
    #: True when ``acquire`` waits for a release in the server (PostgreSQL), so
    #: the first waiter must always be there; else waiters sleep until woken.
    waits_in_server: bool

    async def open(self, wake: Wake) -> None:
        """Connect; call ``wake(name)`` whenever a release of ``name`` is seen."""
        ...

    async def close(self) -> None: ...

    def abandon(self, name: str) -> None:
        """This process's last waiter for ``name`` left without the lock."""
        ...

    def waiting(self, name: str) -> None:
        """This process has waiters for ``name`` the backend was not told of."""
        ...

    async def acquire(
        self, name: str, holder: str, ttl: float, block: float, queued: bool = False
    ) -> Attempt:
        """Take ``name`` if free (or its lease has run out).  A backend that can wait
        in the server (PostgreSQL) may wait up to ``block`` seconds.  ``queued``:
        other waiters in this process queue behind the caller."""
        ...

    async def extend(self, name: str, token: int, holder: str, handle: Any, ttl: float) -> bool:
        """Reset the lease if ``token`` still holds it; False when lost."""
        ...

    async def release(self, name: str, token: int, holder: str, handle: Any) -> bool:
        """Free the lock if ``token`` still holds it (never another holder's); False
        when lost.  Frees ``handle`` whatever the answer."""
        ...

    async def info(self, name: str) -> LockInfo | None: ...

    async def held(self) -> list[LockInfo]: ...

    async def ping(self) -> str:
        """Raise when the backend is unreachable; else a short description."""
        ...
