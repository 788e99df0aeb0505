"""From a request's method and path to the route Discord limits it by.

Discord keeps a bucket per route (``POST /channels/{id}/messages``, learned
from ``X-RateLimit-Bucket``) and per *major parameter*: the channel, guild or
webhook the route starts with.  Other ids (a message, a user) do not split a
bucket, so they become ``{id}``; reaction emoji become ``{emoji}``.  Webhook and
interaction tokens are hashed: they are secrets and never reach Redis.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

__all__ = ["RouteKey", "route_of"]

_MAJOR = frozenset({"channels", "guilds", "webhooks", "interactions"})
#: Routes Discord exempts from the global limit: they carry their own token.
_UNGLOBAL = frozenset({"webhooks", "interactions"})


class RouteKey(NamedTuple):
    """``route``: ``"GET /channels/{id}/messages/{id}"``; ``major``: the value that
    splits its bucket (``""`` when none); ``global_``: whether the global limit applies."""

    route: str
    major: str
    global_: bool


def _secret(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def route_of(method: str, path: str) -> RouteKey:
    """The route of ``path`` (relative to the API base, query allowed)."""
    path = path.split("?", 1)[0].strip("/")
    parts = path.split("/") if path else []
    out: list[str] = []
    major = ""
    for i, part in enumerate(parts):
        head = parts[0] if parts else ""
        if i == 1 and head in _MAJOR and part.isdigit():
            major = part
            out.append("{id}")
        elif i == 2 and head in _UNGLOBAL and parts[1].isdigit():
            major = f"{major}:{_secret(part)}"
            out.append("{token}")
        elif part.isdigit():
            out.append("{id}")
        elif i > 0 and parts[i - 1] == "reactions":
            out.append("{emoji}")
        else:
            out.append(part)
    global_ = not (len(parts) > 2 and parts[0] in _UNGLOBAL and parts[1].isdigit())
    return RouteKey(f"{method.upper()} /" + "/".join(out), major, global_)
