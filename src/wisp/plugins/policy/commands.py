"""``/policy set|list|explain|remove``: the admin surface, guarded by ``policy.manage``."""

from __future__ import annotations

from typing import Literal

import wisp
from wisp.plugins.policy.engine import Action, Actor, Rule, Scope
from wisp.plugins.policy.service import PolicyService, actor_of

ScopeName = Literal["guild", "channel", "role", "user"]


def _service(ctx: wisp.WispContext) -> PolicyService:
    service: PolicyService = ctx.service("policy")
    return service


def _guild(ctx: wisp.WispContext) -> int:
    if ctx.guild_id is None:
        raise wisp.UserError("Policy commands work in a server.")
    return ctx.guild_id


@wisp.command(name="policy set", capability="policy.manage", description="Add a policy rule.")
async def policy_set(
    ctx: wisp.WispContext,
    capability: str,
    decision: Literal["allow", "deny"],
    scope: ScopeName = "guild",
    target: int | None = None,
    priority: int = 0,
) -> wisp.Response:
    guild = _guild(ctx)
    scope_id = target if target is not None else (guild if scope == "guild" else None)
    if scope_id is None:
        raise wisp.UserError(f"A {scope} rule needs `target` (the {scope} id).")
    rule = await _service(ctx).add(
        Rule(capability, Action(decision), Scope[scope.upper()], scope_id, priority, guild),
        by=ctx.user_id,
    )
    return wisp.Response(f"Added {rule.describe()}.", ephemeral=True)


@wisp.command(name="policy list", capability="policy.manage", description="List the rules.")
async def policy_list(ctx: wisp.WispContext) -> wisp.Response:
    rules = await _service(ctx).rules(_guild(ctx))
    text = "\n".join(r.describe() for r in rules) or "No rules: defaults apply."
    return wisp.Response(text, ephemeral=True)


@wisp.command(
    name="policy explain",
    capability="policy.manage",
    description="Explain a decision for a member.",
)
async def policy_explain(
    ctx: wisp.WispContext, capability: str, user: int | None = None
) -> wisp.Response:
    me = actor_of(ctx)
    actor = me if user is None or user == me.user_id else Actor(user, me.guild_id, me.channel_id)
    explanation = await _service(ctx).explain(capability, actor)
    verdict = "allowed" if explanation.decision.allowed else "denied"
    lines = [f"`{capability}` is {verdict}: {explanation.decision.reason}"]
    lines += [
        ("→ " if r is explanation.rule else "  ") + r.describe() for r in explanation.considered
    ]
    return wisp.Response("\n".join(lines), ephemeral=True)


@wisp.command(name="policy remove", capability="policy.manage", description="Remove a rule.")
async def policy_remove(ctx: wisp.WispContext, rule: int) -> wisp.Response:
    service = _service(ctx)
    known = {r.id for r in await service.rules(_guild(ctx)) if r.guild_id == ctx.guild_id}
    if rule not in known:
        raise wisp.NotFound(f"No rule #{rule} in this server.")
    removed = await service.remove(rule, by=ctx.user_id)
    return wisp.Response(f"Removed {removed.describe()}.", ephemeral=True)


COMMANDS = [policy_set, policy_list, policy_explain, policy_remove]
