"""wisp-moderation: warn, timeout, kick and ban, with reasons and a per-guild case log.

Every action is a numbered case in the plugin's own ``moderation_cases``
table (Alembic branch ``moderation``), written with its audit record in one
transaction; ``/case`` and ``/cases`` read the log.  Each command needs its
``moderation.*`` capability, denied by default (the policy plugin's bootstrap
grant gives them to the owner and Administrators).  A timed ban is lifted by
a durable job (``moderation.unban``).  Cases take part in ``wisp export`` and
``wisp import``.  Needs the ``storage`` and ``policy`` plugins; ``jobs`` for
timed bans.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

import wisp
from wisp_moderation.config import ModerationConfig
from wisp_moderation.service import LIFT, MAX_TIMEOUT, ModerationService, show
from wisp_moderation.when import describe, parse_duration

__all__ = ["ModerationConfig", "ModerationService"]

HERE = Path(__file__).parent

#: Left out, with the reason, when either is blocked or missing: without the
#: policy plugin nobody would check the capabilities, and anyone could ban.
wisp_requires = ["storage", "policy"]

CAPABILITIES = {
    "moderation.warn": "Warn members.",
    "moderation.timeout": "Time members out.",
    "moderation.kick": "Kick members.",
    "moderation.ban": "Ban members, for a while or for good.",
    "moderation.cases": "Read the case log.",
}

WISP_PLUGIN = wisp.PluginMetadata(
    name="moderation",
    description="Warn, timeout, kick and ban with reasons, a per-guild case log, timed bans.",
    api=">=1.0,<2",
    requires=("storage", "policy"),
    permissions=("kick_members", "ban_members", "moderate_members", "send_messages"),
    commands=("warn", "timeout", "kick", "ban", "case", "cases"),
    capabilities=tuple(CAPABILITIES),
    data="Moderation cases per server: the id of the member acted on and of the "
    "moderator, the action, the reason and its times; kept until `wisp data "
    "delete-user` (which removes the cases about a member and the moderator id "
    "from the cases they took).",
    user_data=True,
)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"moderation": ModerationConfig}


@wisp.hookimpl
def wisp_capabilities() -> list[wisp.Capability]:
    return [wisp.Capability(name, text, default="deny") for name, text in CAPABILITIES.items()]


@wisp.hookimpl
def wisp_storage_models() -> Any:
    from wisp.plugins.storage.api import ModelSet
    from wisp_moderation.models import Case

    return ModelSet([Case], HERE / "migrations", branch="moderation")


@wisp.hookimpl(optionalhook=True)  # the storage plugin's hook
def wisp_export_sections() -> Any:
    from wisp_moderation.transfer import cases_section

    return [cases_section()]


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    return [ModerationService(app, app.config.section(ModerationConfig))]


def _service(ctx: wisp.WispContext) -> ModerationService:
    service: ModerationService = ctx.service("moderation")
    return service


def _checked(ctx: wisp.WispContext, user: int, reason: str) -> tuple[int, str]:
    """The guild and the cleaned reason; a UserError for what cannot be a case."""
    if ctx.guild_id is None:
        raise wisp.UserError("Moderation works in a server, not here.")
    if user == ctx.user_id:
        raise wisp.UserError("You cannot moderate yourself.")
    reason = reason.strip()
    if not reason:
        raise wisp.UserError("Give a reason: it goes in the case log.")
    limit = _service(ctx).config.max_reason
    if len(reason) > limit:
        raise wisp.UserError(f"The reason is {len(reason)} characters long; the most is {limit}.")
    return ctx.guild_id, reason


def _check_rank(ctx: wisp.WispContext, user: int, action: str) -> None:
    """Discord only checks the *bot's* rank.  A moderator may act on members whose
    highest role is below their own, or who hold no role; never on the owner."""
    raw: Any = ctx.raw
    guild = getattr(raw, "guild", None)
    moderator = getattr(raw, "user", None) or getattr(raw, "author", None)
    if guild is None or moderator is None or moderator.id == guild.owner_id:
        return  # the shell (`wisp call`), or the owner
    if user == guild.owner_id:
        raise wisp.UserError(f"You cannot {action} <@{user}>: they own this server.")
    target = guild.get_member(user)
    if target is None or not hasattr(moderator, "top_role") or target.top_role.is_default():
        return
    if target.top_role >= moderator.top_role:
        raise wisp.UserError(
            f"You cannot {action} <@{user}>: their highest role is not below yours."
        )


USER = wisp.Param("user", wisp.ParamType.USER, description="The member")
REASON = wisp.Param("reason", description="Why (the case log and Discord's audit log)")


async def _act(
    ctx: wisp.WispContext, action: str, user: int, reason: str, duration: str | None = None
) -> str:
    guild_id, reason = _checked(ctx, user, reason)
    _check_rank(ctx, user, action)
    length = parse_duration(duration) if duration is not None else None
    if action == "timeout" and length is not None and length > MAX_TIMEOUT:
        raise wisp.UserError(f"Discord times out for 28 days at most, not {describe(length)}.")
    case = await _service(ctx).act(
        action,
        guild_id=guild_id,
        user_id=user,
        moderator_id=ctx.user_id,
        reason=reason,
        duration=length,
    )
    done = {"warn": "warned", "timeout": "timed out", "kick": "kicked", "ban": "banned"}[action]
    span = f" for {describe(length)}" if length is not None else ""
    return f"Case #{case.number}: <@{user}> {done}{span}. Reason: {reason}"


@wisp.command(name="warn", params=[USER, REASON], capability="moderation.warn")
async def warn(ctx: wisp.WispContext, user: int, reason: str) -> str:
    """Warn a member (recorded as a case)."""
    return await _act(ctx, "warn", user, reason)


@wisp.command(
    name="timeout",
    params=[
        USER,
        wisp.Param("duration", description="How long: 10m, 2h, 7d (28d at most)"),
        REASON,
    ],
    capability="moderation.timeout",
)
async def timeout(ctx: wisp.WispContext, user: int, duration: str, reason: str) -> str:
    """Time a member out: they cannot talk or react for a while."""
    return await _act(ctx, "timeout", user, reason, duration)


@wisp.command(name="kick", params=[USER, REASON], capability="moderation.kick")
async def kick(ctx: wisp.WispContext, user: int, reason: str) -> str:
    """Kick a member (they may join again)."""
    return await _act(ctx, "kick", user, reason)


@wisp.command(
    name="ban",
    params=[
        USER,
        REASON,
        wisp.Param(
            "duration", required=False, description="Lift it after: 1h, 7d (default: never)"
        ),
    ],
    capability="moderation.ban",
)
async def ban(ctx: wisp.WispContext, user: int, reason: str, duration: str | None = None) -> str:
    """Ban a member, for good or for a while."""
    return await _act(ctx, "ban", user, reason, duration)


@wisp.command(
    name="case",
    params=[
        wisp.Param("number", wisp.ParamType.INTEGER, description="The case number", min_value=1)
    ],
    capability="moderation.cases",
)
async def case(ctx: wisp.WispContext, number: int) -> wisp.Response:
    """Show one case of this server's log."""
    if ctx.guild_id is None:
        raise wisp.UserError("Cases belong to a server; ask in one.")
    found = await _service(ctx).case(ctx.guild_id, number)
    if found is None:
        raise wisp.UserError(f"There is no case #{number} in this server.")
    return wisp.Response(show(found), ephemeral=True)


@wisp.command(name="cases", params=[USER], capability="moderation.cases")
async def cases(ctx: wisp.WispContext, user: int) -> wisp.Response:
    """List a member's cases in this server."""
    if ctx.guild_id is None:
        raise wisp.UserError("Cases belong to a server; ask in one.")
    found = await _service(ctx).cases_of(ctx.guild_id, user)
    if not found:
        return wisp.Response(f"<@{user}> has no cases here.", ephemeral=True)
    return wisp.Response("\n".join(show(c) for c in found), ephemeral=True)


@attrs.frozen
class LiftPayload:
    """The unban job's payload: which ban case, and whom it banned where."""

    case_id: int
    guild_id: int | None = None
    user_id: int | None = None


@wisp.job(LIFT, max_attempts=10, timeout=60)
async def lift(ctx: wisp.WispContext, payload: LiftPayload) -> dict[str, Any]:
    """Lift a timed ban that ran out (once, however often it runs)."""
    result: dict[str, Any] = await _service(ctx).lift(
        payload.case_id, payload.guild_id, payload.user_id
    )
    return result


@wisp.hookimpl(optionalhook=True)  # the hook of the kernel's user-data deletion
async def wisp_delete_user_data(
    app: wisp.Wisp, user_id: int, guild_id: int | None
) -> dict[str, int]:
    service: ModerationService = app.services.get("moderation")
    return await service.delete_user(user_id, guild_id)
