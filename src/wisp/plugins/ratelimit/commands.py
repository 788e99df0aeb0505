"""``/ratelimit set|reset|show``: a guild's own limits, guarded by ``ratelimit.manage``."""

from __future__ import annotations

import wisp
from wisp.plugins.audit import api as audit_api
from wisp.plugins.ratelimit.guildlimits import GuildLimits
from wisp.plugins.ratelimit.limits import Limit, LimitError

__all__ = ["COMMANDS", "check_command", "guild_limits", "reset_override", "set_override"]


def guild_limits(app: wisp.Wisp) -> GuildLimits:
    guilds: GuildLimits | None = app.services.get("ratelimit").guilds
    if guilds is None:
        raise wisp.UserError(
            "Per-server limits are off: they need the storage plugin and "
            "[ratelimit] per_guild = true."
        )
    return guilds


async def set_override(
    app: wisp.Wisp, guilds: GuildLimits, guild_id: int, command: str, specs: list[str]
) -> list[Limit]:
    """Replace a guild's override of ``command`` and record it in the audit log."""
    before = (await guilds.for_guild(guild_id)).get(command)
    limits = await guilds.set(guild_id, command, specs)
    await audit_api.record(
        app,
        "ratelimit.set",
        target=command,
        guild_id=guild_id,
        before=None if before is None else [str(x) for x in before],
        after=[str(x) for x in limits],
    )
    return limits


async def reset_override(app: wisp.Wisp, guilds: GuildLimits, guild_id: int, command: str) -> bool:
    """Drop a guild's override of ``command``; record it if there was one."""
    before = (await guilds.for_guild(guild_id)).get(command)
    removed = await guilds.reset(guild_id, command)
    if removed:
        await audit_api.record(
            app,
            "ratelimit.reset",
            target=command,
            guild_id=guild_id,
            before=None if before is None else [str(x) for x in before],
        )
    return removed


def check_command(app: wisp.Wisp, command: str) -> None:
    names = sorted(t.name for t in app.targets() if t.kind == "command")
    if command not in names:
        raise wisp.UserError(f"No command `{command}` (known: {', '.join(names) or 'none'}).")


def _guild(ctx: wisp.WispContext) -> int:
    if ctx.guild_id is None:
        raise wisp.UserError("Rate limits are set per server.")
    return ctx.guild_id


@wisp.command(
    name="ratelimit set",
    capability="ratelimit.manage",
    description="Replace a command's rate limits in this server.",
)
async def ratelimit_set(ctx: wisp.WispContext, command: str, limits: str) -> wisp.Response:
    """``limits``: specs separated by commas (``3/10s per user, 20/m per guild``);
    ``none`` lifts every limit in this server."""
    guild = _guild(ctx)
    check_command(ctx.app, command)
    specs = [] if limits.strip().lower() == "none" else [s for s in limits.split(",") if s.strip()]
    if not specs and limits.strip().lower() != "none":
        raise wisp.UserError("Give limits (`3/10s per user, 20/m per guild`) or `none`.")
    try:
        parsed = await set_override(ctx.app, guild_limits(ctx.app), guild, command, specs)
    except LimitError as exc:
        raise wisp.UserError(str(exc)) from exc
    shown = ", ".join(str(x) for x in parsed) or "no limit"
    return wisp.Response(f"`/{command}` in this server: {shown}.", ephemeral=True)


@wisp.command(
    name="ratelimit reset",
    capability="ratelimit.manage",
    description="Give a command back its usual rate limits in this server.",
)
async def ratelimit_reset(ctx: wisp.WispContext, command: str) -> wisp.Response:
    removed = await reset_override(ctx.app, guild_limits(ctx.app), _guild(ctx), command)
    if not removed:
        return wisp.Response(f"`/{command}` has no server override.", ephemeral=True)
    return wisp.Response(f"`/{command}` is back to its usual limits.", ephemeral=True)


@wisp.command(
    name="ratelimit show",
    capability="ratelimit.manage",
    description="This server's rate-limit overrides.",
)
async def ratelimit_show(ctx: wisp.WispContext) -> wisp.Response:
    overrides = await guild_limits(ctx.app).for_guild(_guild(ctx))
    lines = [
        f"/{name}: {', '.join(str(x) for x in limits) or 'no limit'}"
        for name, limits in sorted(overrides.items())
    ]
    return wisp.Response(
        "\n".join(lines) or "No overrides: commands use their own limits.", ephemeral=True
    )


COMMANDS = [ratelimit_set, ratelimit_reset, ratelimit_show]
