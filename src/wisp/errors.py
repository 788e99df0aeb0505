"""The error taxonomy: what a user may be shown, and what stays in the logs.

Every error a user can see derives from :class:`WispError` and carries a
``safe_message``.  Anything else that escapes a handler is an internal error:
it is logged with the request id and the user sees only a generic message.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ExternalServiceError",
    "NotFound",
    "PermissionDenied",
    "PluginError",
    "RateLimited",
    "UserError",
    "WispError",
]


class WispError(Exception):
    """Base of errors whose ``safe_message`` may be shown to a user."""

    safe_message: str = "Something went wrong."

    def __init__(self, safe_message: str | None = None, *, detail: str | None = None) -> None:
        if safe_message is not None:
            self.safe_message = safe_message
        self.detail = detail
        super().__init__(detail or self.safe_message)


class UserError(WispError):
    """The user asked for something invalid; the message tells them what."""

    safe_message = "That did not work."


class PermissionDenied(WispError):
    """The caller lacks a capability the invocation requires."""

    safe_message = "You are not allowed to do that."

    def __init__(
        self,
        safe_message: str | None = None,
        *,
        capability: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.capability = capability
        super().__init__(safe_message, detail=detail)


class RateLimited(WispError):
    """A rate limit rejected the call; ``retry_after`` is in seconds."""

    def __init__(
        self,
        retry_after: float,
        safe_message: str | None = None,
        *,
        bucket: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.retry_after = max(0.0, float(retry_after))
        self.bucket = bucket
        if safe_message is None:
            safe_message = f"Slow down: try again in {self.retry_after:.1f}s."
        super().__init__(safe_message, detail=detail)


class NotFound(WispError):
    """The thing the user named does not exist."""

    safe_message = "Not found."


class ExternalServiceError(WispError):
    """A service Wisp depends on failed; the user may retry later."""

    safe_message = "A service this command needs is unavailable right now. Try again later."


class PluginError(Exception):
    """A plugin could not be loaded, validated or started.  Not user-facing."""


class ConfigError(Exception):
    """Configuration is invalid; ``problems`` lists every bad key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")
