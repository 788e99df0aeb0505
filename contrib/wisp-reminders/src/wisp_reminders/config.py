"""``[reminders]`` in wisp.toml."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["RemindersConfig"]


def _at_least_one(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1")


def _text_limit(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    # Discord takes 2,000 characters a message; the mention and prefix need room.
    if not 1 <= value <= 1900:
        raise ValueError("max_text must be between 1 and 1900 (Discord's limit is 2000)")


@attrs.frozen
class RemindersConfig:
    """``[reminders]``."""

    #: Longest reminder text, in characters.
    max_text: int = attrs.field(default=1000, validator=_text_limit)
    #: Pending reminders one user may have at once.
    max_pending: int = attrs.field(default=25, validator=_at_least_one)
    #: How far ahead a reminder may be set.
    max_days: int = attrs.field(default=365, validator=_at_least_one)
    #: The jobs queue reminders are fired from (a worker must take it).
    queue: str = "default"
