"""Policy: capabilities, scoped rules with priority, explain, audit.

Bundled plugin ``policy`` (needs ``storage``); block it with ``-p no:policy``.
Commands name the capability they need in their metadata
(``@wisp.command(capability="moderation.ban")``); the policy middleware
checks it before rate limits and the handler.  Rules live in ``policy_rules``;
resolution is in :mod:`wisp.plugins.policy.engine`.  ``wispconf.py`` files and
other plugins take part through ``wisp_policy_decide``, ahead of the rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

import wisp
from wisp.plugins.policy.engine import Action, Capability
from wisp.plugins.policy.models import PolicyAudit, PolicyRule
from wisp.plugins.policy.service import PolicyService, actor_of
from wisp.plugins.storage.api import ExportSection, ModelSet
from wisp.targets import Target

wisp_requires = ["storage"]

HERE = Path(__file__).parent
service_key = wisp.StashKey[PolicyService]()


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


@wisp.hookimpl
def wisp_storage_models() -> ModelSet:
    return ModelSet([PolicyRule, PolicyAudit], HERE / "migrations", branch="policy")


@wisp.hookimpl
def wisp_configure(app: wisp.Wisp) -> None:
    declared: dict[str, Capability] = {}
    for plugin, result in app.pluginmanager.results("wisp_capabilities"):
        for cap in result:
            if not isinstance(cap, Capability):
                raise wisp.PluginError(
                    f"plugin {plugin!r} declared {cap!r}; expected wisp.Capability"
                )
            declared[cap.name] = cap
    config: PolicyConfig = app.config.section(PolicyConfig)
    app.stash[service_key] = PolicyService(app, declared, bootstrap=config.bootstrap)


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> wisp.Service:
    return app.stash[service_key]


@wisp.hookimpl(trylast=True)
async def wisp_policy_decide(ctx: wisp.WispContext, capability: str) -> wisp.Decision:
    service = ctx.app.stash[service_key]
    explanation = await service.explain(capability, actor_of(ctx), every_rule=False)
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


@wisp.hookimpl
def wisp_export_sections() -> list[ExportSection]:
    from wisp.plugins.storage.transfer import table_section

    return [table_section(PolicyRule)]


@wisp.hookimpl
def wisp_cli_commands() -> Sequence[wisp.CliCommand]:
    from wisp.plugins.policy.cli import COMMANDS

    return COMMANDS
