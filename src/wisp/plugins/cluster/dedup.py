"""What makes two deliveries of a Discord event "the same event".

While two shard generations overlap, one gateway event reaches a process of
each.  Its identity is built from what both processes parse alike: the event
name and the ids of its objects (a message id, a guild and member id, a
reaction's message, emoji and user), plus what tells two real changes apart
(an edit's timestamp, a member's nickname and roles).  Never ``repr``: it
holds process-local state such as cache counts.
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["event_digest", "event_identity"]


def _part(value: Any) -> str:
    if value is None or isinstance(value, str | int | float | bool):
        return repr(value)
    if hasattr(value, "emoji") and hasattr(value, "message"):  # a Reaction
        return f"reaction:{value.message.id}:{value.emoji}"
    parts = [type(value).__name__, str(getattr(value, "id", ""))]
    guild = getattr(value, "guild", None)
    if guild is not None and hasattr(guild, "id"):
        parts.append(f"g{guild.id}")
    edited = getattr(value, "edited_at", None)
    if edited is not None:
        parts.append(edited.isoformat())
    if hasattr(value, "roles") and hasattr(value, "nick"):  # a Member
        roles = ",".join(str(r.id) for r in getattr(value, "roles", ()))
        parts += [str(value.nick), roles, str(getattr(value, "timed_out_until", None))]
    return ":".join(parts)


def event_identity(event: str, args: tuple[Any, ...]) -> str:
    """``message_edit|Message:1:g2:2024-...`` and so on."""
    return "|".join([event, *(_part(a) for a in args)])


def event_digest(event: str, args: tuple[Any, ...]) -> str:
    return hashlib.sha1(event_identity(event, args).encode(), usedforsecurity=False).hexdigest()
