"""Request ids: unique, cheap, and sortable by creation time.

Layout (32 hex digits): 48 bits of Unix milliseconds, 40 bits drawn at random
once per process (re-drawn after fork), 40 bits of a per-process counter.  Ids
made later sort later; two processes collide only if their random parts do.
"""

from __future__ import annotations

import os
import secrets
import time

__all__ = ["new_request_id", "request_id_time"]

_COUNTER_MASK = (1 << 40) - 1
_node = secrets.randbits(40)
_counter = secrets.randbits(24)


def _reseed() -> None:
    global _node, _counter
    _node = secrets.randbits(40)
    _counter = secrets.randbits(24)


os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    """Return a new request id (32 lowercase hex digits)."""
    global _counter
    _counter = (_counter + 1) & _COUNTER_MASK
    return f"{time.time_ns() // 1_000_000:012x}{_node:010x}{_counter:010x}"


def request_id_time(request_id: str) -> float:
    """Return the Unix time (seconds) encoded in ``request_id``."""
    return int(request_id[:12], 16) / 1000.0
