"""``[moderation]`` in wisp.toml."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["ModerationConfig"]


def _reason_limit(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    # Discord's audit-log reason holds 512 characters.
    if not 1 <= value <= 512:
        raise ValueError("max_reason must be between 1 and 512 (Discord's audit-log limit)")


@attrs.frozen
class ModerationConfig:
    """``[moderation]``."""

    #: Longest reason, in characters.
    max_reason: int = attrs.field(default=512, validator=_reason_limit)
    #: Where the bot announces what happens without a command (a timed ban lifted).
    log_channel: int | None = None
    #: The jobs queue timed bans are lifted from (a worker must take it).
    queue: str = "default"
