"""Hooks the audit plugin adds (through ``wisp_addhooks``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wisp.markers import hookspec

if TYPE_CHECKING:
    from wisp.app import Wisp
    from wisp.plugins.audit.api import AuditRecord


@hookspec
def wisp_audit_record(app: Wisp, record: AuditRecord, session: Any) -> None:
    """An auditable action happened: store or forward ``record``.

    Emit records with :func:`wisp.plugins.audit.api.record`, never by
    calling this hook directly: that function fills in the actor and request
    id and does nothing when no plugin implements the hook (the audit plugin
    blocked).  The audit plugin implements it by appending to ``audit_log``.
    May be ``async``; each implementation is awaited in turn.

    :param app: The application.
    :param record: A :class:`wisp.plugins.audit.api.AuditRecord`.
    :param session: The emitter's open SQLAlchemy ``AsyncSession`` when the
        change and its record must commit together, else ``None``.  An
        implementation writing to the same database adds its row to it; a
        raise then rolls the change back.

    ``wispconf.py`` files: all.
    """
