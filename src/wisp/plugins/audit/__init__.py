"""Audit: one append-only log of who changed what, and of admin commands.

Bundled plugin ``audit`` (needs ``storage``); block it with ``-p no:audit``.
Other plugins emit records with :func:`wisp.plugins.audit.api.record`
(policy rule changes, rate-limit overrides, plugin switches); that goes
through the ``wisp_audit_record`` hook, which this plugin implements by
appending to ``audit_log``, so blocking it only drops the records.  A
middleware records every command that requires a capability and every target
marked ``audit=True``.  ``wisp audit list`` reads the log; it takes part in
``wisp export``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loguru import logger

import wisp
from wisp.plugins.audit import hookspecs
from wisp.plugins.audit.api import AuditRecord, record
from wisp.plugins.audit.config import AuditConfig
from wisp.targets import Target

# The service (and SQLAlchemy) load only when the plugin runs: emitters import
# wisp.plugins.audit.api, which pulls in this module, whatever is blocked.
__all__ = ["AuditConfig", "AuditRecord", "record"]

HERE = Path(__file__).parent


WISP_PLUGIN = wisp.PluginMetadata(
    name="audit",
    description="An append-only audit log of policy changes and admin commands; wisp audit list.",
    api=">=1.0,<2",
    user_data=True,
    data="Who changed what: the acting user id, guild id and the before/after of each change.",
)


@wisp.hookimpl
def wisp_addhooks(pluginmanager: Any) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"audit": AuditConfig}


@wisp.hookimpl(optionalhook=True)  # the storage plugin may be blocked
def wisp_storage_models() -> Any:
    from wisp.plugins.audit.models import AuditEntry
    from wisp.plugins.storage.api import ModelSet

    return ModelSet([AuditEntry], HERE / "migrations", branch="audit")


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    if not app.pluginmanager.has_plugin("storage"):
        logger.warning("the audit log is off: it needs the storage plugin, which is not loaded")
        return []
    from wisp.plugins.audit.service import AuditService

    return [AuditService(app)]


@wisp.hookimpl
async def wisp_audit_record(app: wisp.Wisp, record: AuditRecord, session: Any) -> None:
    if "audit" in app.services:
        await app.services.get("audit").write(record, session)


@wisp.hookimpl
async def wisp_delete_user_data(
    app: wisp.Wisp, user_id: int, guild_id: int | None
) -> dict[str, int] | None:
    # The log keeps what happened, no longer who did it: the entries stay,
    # their actor is erased.
    if "audit" not in app.services:
        return None
    from sqlalchemy import update

    from wisp.plugins.audit.models import AuditEntry

    stmt = update(AuditEntry).where(AuditEntry.actor_id == user_id).values(actor_id=None)
    if guild_id is not None:
        stmt = stmt.where(AuditEntry.guild_id == guild_id)
    async with app.services.get("db").transaction() as s:
        result: Any = await s.execute(stmt)
    return {"audit entries anonymised": int(result.rowcount or 0)}


@wisp.hookimpl(optionalhook=True)
def wisp_export_sections() -> Any:
    from wisp.plugins.audit.models import AuditEntry
    from wisp.plugins.storage.transfer import table_section

    return [table_section(AuditEntry)]


def audited(app: wisp.Wisp, target: Target) -> bool:
    """Whether the audit middleware records ``target``'s invocations."""
    flag = target.metadata.get("audit")
    if flag is not None:
        return bool(flag)
    config: AuditConfig = app.config.section(AuditConfig)
    return config.commands and target.kind == "command" and bool(target.metadata.get("capability"))


@wisp.hookimpl
def wisp_middleware(app: wisp.Wisp, target: Target) -> wisp.Middleware | None:
    if not audited(app, target):
        return None
    action = f"{target.kind}.{target.name}"
    keep_options = app.config.section(AuditConfig).options

    async def audit(ctx: wisp.WispContext, call_next: wisp.CallNext) -> Any:
        outcome = "cancelled"
        error: Exception | None = None
        try:
            result = await call_next(ctx)
            outcome = "ok"
            return result
        except wisp.PermissionDenied as exc:
            outcome, error = "denied", exc
            raise
        except Exception as exc:
            outcome, error = "error", exc
            raise
        finally:
            detail: dict[str, Any] = {"invocation": ctx.invocation_type.value}
            if keep_options:
                detail["options"] = ctx.options
            if error is not None:
                detail["error"] = type(error).__name__
            # record() logs a failed write: the command's own outcome stands.
            await record(ctx.app, action, outcome=outcome, detail=detail)

    # Outside policy, so refused attempts are recorded too.
    return wisp.Middleware("audit", audit, wisp.Order.POLICY - 50)


@wisp.hookimpl
def wisp_cli_commands() -> Sequence[wisp.CliCommand]:
    from wisp.plugins.audit.cli import COMMANDS

    return COMMANDS
