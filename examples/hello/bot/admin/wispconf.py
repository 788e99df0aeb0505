"""Overrides for the commands under bot/admin/ only."""

from __future__ import annotations

import wisp

ADMINS = {1}


@wisp.hookimpl
def wisp_policy_decide(ctx: wisp.WispContext, capability: str) -> wisp.Decision | None:
    if capability.startswith("moderation."):
        if ctx.user_id in ADMINS:
            return wisp.Decision.allow("listed in bot/admin/wispconf.py")
        return wisp.Decision.deny("admins only")
    return None


@wisp.hookimpl
def wisp_error_message(ctx: wisp.WispContext, error: BaseException) -> str | None:
    if isinstance(error, wisp.PermissionDenied):
        return "Only the bot's admins can do that."
    return None
