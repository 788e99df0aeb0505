"""Policy: capabilities, scoped rules with priority, explain, audit.

Bundled plugin ``policy`` (rules live in ``storage``); block it with ``-p no:policy``.
With storage blocked it stays loaded and says so: capabilities are still checked,
decided by each capability's default and the bootstrap grant, and changing a
rule is a clear error.
Commands name the capability they need in their metadata
(``@wisp.command(capability="moderation.ban")``); the policy middleware
checks it before rate limits and the handler.  Rules live in ``policy_rules``;
resolution is in :mod:`wisp.plugins.policy.engine`.  ``wispconf.py`` files and
other plugins take part through ``wisp_policy_decide``, ahead of the rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

import wisp
from wisp.plugins.policy.engine import Action, Actor, Capability
from wisp.targets import Target

# The rules live in SQLAlchemy tables: their modules load at configure time,
# so `wisp --help` does not import SQLAlchemy.
if TYPE_CHECKING:
    from wisp.plugins.policy.service import PolicyService
    from wisp.plugins.storage.api import ExportSection, ModelSet

WISP_PLUGIN = wisp.PluginMetadata(
    name="policy",
    description="Capabilities and scoped rules with priority: wisp policy, /policy.",
    api=">=1.0,<2",
    commands=("policy",),
    capabilities=("policy.manage",),
    data="Policy rules, which may name a user (a user-scoped rule) and who created them; "
    "the legacy policy_audit table names who changed a rule.",
    user_data=True,
)

HERE = Path(__file__).parent
service_key: wisp.StashKey[PolicyService] = wisp.StashKey()
#: ``service.actor_of``, bound at configure time (it is on every decision's path).
_actor_of: Callable[[wisp.WispContext], Actor] | None = None


@attrs.frozen
class PolicyConfig:
    """``[policy]``."""

    #: Server owners and Administrators hold every capability (see docs/policy.md).
    bootstrap: bool = True


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"policy": PolicyConfig}


@wisp.hookimpl
def wisp_capabilities() -> list[Capability]:
    return [
        Capability("policy.manage", "Change policy rules.", Action.DENY),
    ]


@wisp.hookimpl(optionalhook=True)  # the storage plugin may be blocked
def wisp_storage_models() -> ModelSet:
    from wisp.plugins.policy.models import PolicyAudit, PolicyRule
    from wisp.plugins.storage.api import ModelSet

    return ModelSet([PolicyRule, PolicyAudit], HERE / "migrations", branch="policy")


@wisp.hookimpl
def wisp_configure(app: wisp.Wisp) -> None:
    global _actor_of
    from wisp.plugins.policy.service import PolicyService, actor_of

    _actor_of = actor_of
    declared: dict[str, Capability] = {}
    for plugin, result in app.pluginmanager.results("wisp_capabilities"):
        for cap in result:
            if not isinstance(cap, Capability):
                raise wisp.PluginError(
                    f"plugin {plugin!r} declared {cap!r}; expected wisp.Capability"
                )
            declared[cap.name] = cap
    config: PolicyConfig = app.config.section(PolicyConfig)
    stored = app.pluginmanager.has_plugin("storage")
    if not stored:
        # Blocking storage must not drop permission checks: defaults still decide.
        logger.warning(
            "policy: rules are off (they live in the storage plugin, which is not "
            "loaded); each capability's default and the bootstrap grant decide"
        )
    app.stash[service_key] = PolicyService(app, declared, bootstrap=config.bootstrap, stored=stored)


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> wisp.Service:
    return app.stash[service_key]


@wisp.hookimpl(trylast=True)
async def wisp_policy_decide(ctx: wisp.WispContext, capability: str) -> wisp.Decision:
    service = ctx.app.stash[service_key]
    assert _actor_of is not None  # bound by wisp_configure, which runs first
    explanation = await service.explain(capability, _actor_of(ctx), every_rule=False)
    return explanation.decision


@wisp.hookimpl
def wisp_middleware(target: Target) -> wisp.Middleware | None:
    capability = target.metadata.get("capability")
    if not capability:
        return None
    cap = str(capability)

    async def policy(ctx: wisp.WispContext, call_next: wisp.CallNext) -> Any:
        await ctx.app.require(ctx, cap)
        return await call_next(ctx)

    return wisp.Middleware("policy", policy, wisp.Order.POLICY)


@wisp.hookimpl
def wisp_commands() -> list[wisp.Command]:
    from wisp.plugins.policy.commands import COMMANDS

    return COMMANDS


@wisp.hookimpl(optionalhook=True)  # the storage plugin may be blocked
def wisp_export_sections() -> list[ExportSection]:
    from wisp.plugins.policy.models import PolicyRule
    from wisp.plugins.storage.transfer import table_section

    return [table_section(PolicyRule)]


@wisp.hookimpl
def wisp_cli_commands() -> Sequence[wisp.CliCommand]:
    from wisp.plugins.policy.cli import COMMANDS

    return COMMANDS


@wisp.hookimpl
async def wisp_delete_user_data(
    app: wisp.Wisp, user_id: int, guild_id: int | None
) -> dict[str, int] | None:
    # Rules about the user go; rules and audit entries the user made stay,
    # without their name: the guild's policy must not change behind its back.
    service = app.stash.get(service_key, None)
    if service is None or "db" not in app.services:
        return None
    from sqlalchemy import and_, delete, update

    from wisp.plugins.policy.models import PolicyAudit, PolicyRule

    def scoped(query: Any, column: Any) -> Any:
        return query if guild_id is None else query.where(column == guild_id)

    removed = delete(PolicyRule).where(
        and_(PolicyRule.scope == "user", PolicyRule.scope_id == user_id)
    )
    created = update(PolicyRule).where(PolicyRule.created_by == user_id).values(created_by=None)
    audited = update(PolicyAudit).where(PolicyAudit.actor_id == user_id).values(actor_id=None)
    async with app.services.get("db").transaction() as s:
        rules: Any = await s.execute(scoped(removed, PolicyRule.guild_id))
        made: Any = await s.execute(scoped(created, PolicyRule.guild_id))
        audit: Any = await s.execute(scoped(audited, PolicyAudit.guild_id))
    await service._changed(guild_id)
    return {
        "user-scoped rules": int(rules.rowcount or 0),
        "rules anonymised": int(made.rowcount or 0),
        "legacy audit entries anonymised": int(audit.rowcount or 0),
    }
