"""wisp-reminders: ``/remind``, ``/reminders list`` and ``/reminders cancel``.

Each reminder is a row in the plugin's own ``reminders`` table (Alembic
branch ``reminders``) and one durable job (``reminders.fire``, idempotency
key ``reminders:ID``) due at its time; a worker (``wisp worker``, or the
bot's own with ``[jobs] embedded_worker = true``) fires it through Discord's
API.  Needs the ``storage`` and ``jobs`` plugins.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import wisp
from wisp_reminders.config import RemindersConfig
from wisp_reminders.service import FIRE, FirePayload, RemindersService
from wisp_reminders.when import describe, parse_at, parse_duration, utc

__all__ = ["RemindersConfig", "RemindersService"]

HERE = Path(__file__).parent

#: Left out, with the reason, when either is blocked or missing.
wisp_requires = ["storage", "jobs"]

WISP_PLUGIN = wisp.PluginMetadata(
    name="reminders",
    description="/remind, /reminders list and /reminders cancel, fired through durable jobs.",
    api=">=1.0,<2",
    requires=("storage", "jobs"),
    permissions=("send_messages",),
    commands=("remind", "reminders list", "reminders cancel"),
    data="Reminder texts with the ids of the user who set them and of the channel and "
    "server they were set in, and when they are due; kept after they are sent or "
    "cancelled, until `wisp data delete-user`.",
    user_data=True,
)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"reminders": RemindersConfig}


@wisp.hookimpl
def wisp_storage_models() -> Any:
    from wisp.plugins.storage.api import ModelSet
    from wisp_reminders.models import Reminder

    return ModelSet([Reminder], HERE / "migrations", branch="reminders")


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    return [RemindersService(app, app.config.section(RemindersConfig))]


def _service(ctx: wisp.WispContext) -> RemindersService:
    service: RemindersService = ctx.service("reminders")
    return service


def _show(due: datetime, now: datetime) -> str:
    due = utc(due)
    return f"{due:%Y-%m-%d %H:%M} UTC (in {describe(due - now)})"


@wisp.command(
    name="remind",
    params=[
        wisp.Param("text", description="What to remind you of"),
        wisp.Param("in", required=False, description="After this long: 10m, 2h30m, 1d"),
        wisp.Param("at", required=False, description="At this ISO time: 2026-12-01T09:00 (UTC)"),
    ],
)
async def remind(ctx: wisp.WispContext, text: str, **when: str | None) -> wisp.Response:
    """Set a reminder: in a duration or at a time."""
    after, at = when.get("in"), when.get("at")
    if (after is None) == (at is None):
        raise wisp.UserError("Say when: give `in` (like `10m`) or `at` (an ISO time), not both.")
    if ctx.user_id is None or ctx.channel_id is None:
        raise wisp.UserError("Use /remind in a channel, so I know where to remind you.")
    now = datetime.now(UTC)
    due = now + parse_duration(after) if after is not None else parse_at(str(at))
    reminder = await _service(ctx).create(
        user_id=ctx.user_id,
        channel_id=ctx.channel_id,
        guild_id=ctx.guild_id,
        text=text,
        due_at=due,
        now=now,
    )
    return wisp.Response(
        f"Reminder #{reminder.id} set for {_show(reminder.due_at, now)}.", ephemeral=True
    )


@wisp.command(name="reminders list")
async def list_reminders(ctx: wisp.WispContext) -> wisp.Response:
    """Your pending reminders in this server."""
    if ctx.user_id is None:
        raise wisp.UserError("Whose reminders? Run this as a user.")
    pending = await _service(ctx).pending(ctx.user_id, ctx.guild_id)
    if not pending:
        return wisp.Response("You have no pending reminders.", ephemeral=True)
    now = datetime.now(UTC)
    lines = [f"#{r.id} {_show(r.due_at, now)}: {r.text}" for r in pending]
    return wisp.Response("\n".join(lines), ephemeral=True)


@wisp.command(
    name="reminders cancel",
    params=[wisp.Param("id", wisp.ParamType.INTEGER, description="The reminder's number")],
)
async def cancel_reminder(ctx: wisp.WispContext, id: int) -> wisp.Response:
    """Cancel one of your reminders."""
    if ctx.user_id is None:
        raise wisp.UserError("Whose reminder? Run this as a user.")
    reminder = await _service(ctx).cancel(id, ctx.user_id)
    return wisp.Response(f"Reminder #{reminder.id} cancelled.", ephemeral=True)


@wisp.job(FIRE, max_attempts=5, timeout=60)
async def fire(ctx: wisp.WispContext, payload: FirePayload) -> dict[str, Any]:
    """Say a due reminder (skipped when it was cancelled or already said)."""
    result: dict[str, Any] = await _service(ctx).fire(payload.reminder_id)
    return result


@wisp.hookimpl(optionalhook=True)  # the hook of the kernel's user-data deletion
async def wisp_delete_user_data(
    app: wisp.Wisp, user_id: int, guild_id: int | None
) -> dict[str, int]:
    service: RemindersService = app.services.get("reminders")
    return {"reminders": await service.delete_user(user_id, guild_id)}
