"""What an invocation hands back to its transport.

Plain (not frozen) attrs classes: one of each is built per invocation, and
frozen attrs instances cost twice as much to build.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["Outcome", "Response"]


@attrs.define
class Response:
    """A reply, transport-independent: the Discord plugin renders it.

    ``embed`` and ``view`` are the transport's own objects, passed through.
    """

    content: str | None = None
    embed: Any = None
    ephemeral: bool = False
    view: Any = None

    @classmethod
    def of(cls, result: Any) -> Response | None:
        """Normalize a handler's return value."""
        if result is None or isinstance(result, Response):
            return result
        if isinstance(result, str):
            return cls(content=result)
        return cls(content=str(result))


@attrs.define
class Outcome:
    """The end of one invocation: the reply, and the error if it failed."""

    request_id: str
    response: Response | None
    error: BaseException | None = None
    #: What the handler returned, as it was (a job's result, say).
    value: Any = None

    @property
    def ok(self) -> bool:
        return self.error is None
