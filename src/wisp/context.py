"""The execution context every invocation carries through the pipeline.

One :class:`WispContext` is built per command, event, job, saga step or CLI
call.  It lives in a contextvar while the invocation runs, so any code awaited
from it can reach it with :func:`current_context` and every loguru line it
writes carries the request id.
"""

from __future__ import annotations

import enum
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from loguru import logger as _root_logger

from wisp.requestid import new_request_id
from wisp.stash import Stash

if TYPE_CHECKING:
    from loguru import Logger

    from wisp.app import Wisp
    from wisp.targets import Target

__all__ = ["InvocationType", "WispContext", "current_context"]

S = TypeVar("S")


class InvocationType(enum.StrEnum):
    """What started an invocation."""

    SLASH = "slash"
    PREFIX = "prefix"
    EVENT = "event"
    JOB = "job"
    SAGA = "saga"
    CLI = "cli"


_current: ContextVar[WispContext | None] = ContextVar("wisp_context", default=None)


def current_context() -> WispContext | None:
    """Return the context of the invocation running now, if any."""
    return _current.get()


@attrs.define(slots=True, eq=False, kw_only=True)
class WispContext:
    """Everything one invocation knows about itself.

    ``options`` are the invocation's arguments by name; ``raw`` is the
    transport's own object (a discord.py interaction or message), opaque to the
    kernel.  Plugins keep per-invocation state in ``stash``.
    """

    app: Wisp
    invocation_type: InvocationType
    name: str
    request_id: str = attrs.field(factory=new_request_id)
    guild_id: int | None = None
    channel_id: int | None = None
    user_id: int | None = None
    options: dict[str, Any] = attrs.field(factory=dict)
    target: Target | None = None
    raw: Any = None
    #: For job invocations: the job's id and which attempt this is (1 first).
    job_id: str | None = None
    attempt: int = 1
    stash: Stash = attrs.field(factory=Stash)
    _logger: Logger | None = attrs.field(default=None, alias="_logger", repr=False)

    @property
    def logger(self) -> Logger:
        """A loguru logger bound with this invocation's request id."""
        if self._logger is None:
            self._logger = _root_logger.bind(request_id=self.request_id, invocation=self.name)
        return self._logger

    def service(self, name: str) -> Any:
        """Return the started service called ``name`` (looked up on use)."""
        return self.app.services.get(name)

    def service_of(self, kind: type[S]) -> S:
        """Return the one started service that is an instance of ``kind``."""
        return self.app.services.get_by_type(kind)


def _set_current(ctx: WispContext | None) -> Any:
    return _current.set(ctx)


def _reset_current(token: Any) -> None:
    _current.reset(token)
