"""``[audit]``: which invocations the audit middleware records."""

from __future__ import annotations

import attrs

__all__ = ["AuditConfig"]


@attrs.frozen
class AuditConfig:
    """``[audit]``."""

    #: Record every command that requires a capability (an admin command), and
    #: every target marked ``audit=True``; ``audit=False`` on a target opts out.
    commands: bool = True
    #: Keep the invocation's options in the record's ``detail``.
    options: bool = True
