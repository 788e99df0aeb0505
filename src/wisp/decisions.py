"""The answer to "may this caller do that?", shared by every policy source."""

from __future__ import annotations

import attrs

__all__ = ["Decision"]


@attrs.frozen
class Decision:
    """Allow or deny, with the reason and who decided."""

    allowed: bool
    reason: str = ""
    source: str | None = None

    @classmethod
    def allow(cls, reason: str = "", source: str | None = None) -> Decision:
        return cls(True, reason, source)

    @classmethod
    def deny(cls, reason: str = "", source: str | None = None) -> Decision:
        return cls(False, reason, source)
