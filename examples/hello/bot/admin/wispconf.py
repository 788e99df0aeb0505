"""Overrides for the commands under bot/admin/ only."""

from __future__ import annotations

from typing import Any

import wisp

#: User ids allowed to moderate from the command line (`wisp call --user 1 purge`).
ADMINS = {1}


def _is_owner(ctx: wisp.WispContext) -> bool:
    guild: Any = getattr(ctx.raw, "guild", None)
    return guild is not None and guild.owner_id == ctx.user_id


@wisp.hookimpl
def wisp_policy_decide(ctx: wisp.WispContext, capability: str) -> wisp.Decision | None:
    if capability.startswith("moderation."):
        if ctx.user_id in ADMINS or _is_owner(ctx):
            return wisp.Decision.allow("an admin, per bot/admin/wispconf.py")
        return wisp.Decision.deny("admins only")
    return None


@wisp.hookimpl
def wisp_error_message(ctx: wisp.WispContext, error: BaseException) -> str | None:
    if isinstance(error, wisp.PermissionDenied):
        return "Only the bot's admins can do that."
    return None
