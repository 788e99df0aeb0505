"""What other plugins import to write to the audit log.

Importing this module never registers the audit plugin.  Emitters call
:func:`record`; it goes through the ``wisp_audit_record`` hook, so blocking
the audit plugin (``-p no:audit``) only drops the records: the emitting plugin
keeps working.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

from wisp.context import current_context

if TYPE_CHECKING:
    from wisp.app import Wisp

__all__ = ["AuditRecord", "jsonable", "record"]

#: Marks "take it from the running invocation" for actor and guild.
_FROM_CONTEXT: Any = object()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def jsonable(value: Any) -> Any:
    """``value`` as JSON-ready data: containers kept, anything else as its text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if attrs.has(type(value)):
        return jsonable(attrs.asdict(value, recurse=False))
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


@attrs.frozen(kw_only=True)
class AuditRecord:
    """One audited action: who did what to which thing, and how it looked
    before and after.  ``before``/``after``/``detail`` are JSON-ready data."""

    action: str
    actor_id: int | None = None
    target: str | None = None
    guild_id: int | None = None
    request_id: str | None = None
    outcome: str | None = None
    before: Any = None
    after: Any = None
    detail: Any = None
    at: datetime = attrs.field(factory=_utcnow)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, ``at`` in ISO 8601 UTC."""
        out = attrs.asdict(self, recurse=False)
        out["at"] = self.at.astimezone(UTC).isoformat()
        return out


async def record(
    app: Wisp,
    action: str,
    *,
    target: str | None = None,
    actor_id: int | None = _FROM_CONTEXT,
    guild_id: int | None = _FROM_CONTEXT,
    request_id: str | None = None,
    outcome: str | None = None,
    before: Any = None,
    after: Any = None,
    detail: Any = None,
    session: Any = None,
) -> AuditRecord | None:
    """Emit an audit record; returns it, or ``None`` when nobody listens.

    ``actor_id``, ``guild_id`` and ``request_id`` default to the running
    invocation's (none from the shell).  With ``session`` (the caller's open
    transaction) the record commits with the change, and a failure to write
    it raises so the change rolls back; without, a failure is logged and the
    caller goes on: the action already happened.
    """
    hook = getattr(app.hook, "wisp_audit_record", None)
    if hook is None or not hook.get_hookimpls():
        return None
    ctx = current_context()
    if actor_id is _FROM_CONTEXT:
        actor_id = ctx.user_id if ctx is not None else None
    if guild_id is _FROM_CONTEXT:
        guild_id = ctx.guild_id if ctx is not None else None
    if request_id is None and ctx is not None:
        request_id = ctx.request_id
    entry = AuditRecord(
        action=action,
        actor_id=actor_id,
        target=target,
        guild_id=guild_id,
        request_id=request_id,
        outcome=outcome,
        before=jsonable(before),
        after=jsonable(after),
        detail=jsonable(detail),
    )
    for impl in reversed(hook.get_hookimpls()):
        kwargs = {"app": app, "record": entry, "session": session}
        try:
            result = impl.function(*[kwargs[a] for a in impl.argnames])
            if inspect.isawaitable(result):
                await result
        except Exception:
            if session is not None:
                raise
            logger.opt(exception=True).error(
                "audit record {!r} not written by plugin {}", action, impl.plugin_name
            )
    return entry
