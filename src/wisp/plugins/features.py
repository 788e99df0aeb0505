"""Feature flags: switch any plugin's commands and event handlers off per guild.

Bundled plugin ``features`` (its switches live in ``storage``; block it with
``-p no:features``).  A plugin's switch lives in ``plugin_states`` and
defaults to the plugin module's ``wisp_default_enabled`` (true if unset).  A
switched-off plugin's commands answer with a clear message; the Discord
router already skips its event handlers.  ``/plugins enable|disable|list``
(guarded by ``plugins.manage``) and ``wisp plugins enable|disable NAME
--guild ID``.  With storage blocked the plugin stays loaded and logs why the
switches are off: every plugin is on, and switching answers with the reason.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from loguru import logger

import wisp
from wisp.plugins.audit import api as audit_api
from wisp.targets import Target

#: Plugins whose commands stay on: switching these off would lock a guild out.
ALWAYS_ON = frozenset({"features", "policy"})


WISP_PLUGIN = wisp.PluginMetadata(
    name="features",
    description="Per-guild plugin switches: /plugins, wisp plugins enable|disable.",
    api=">=1.0,<2",
    commands=("plugins enable", "plugins disable", "plugins list"),
    capabilities=("plugins.manage",),
    data="Per-guild plugin switches (in storage's plugin_states); nothing about users.",
)


#: Why switching is off: storage (which holds the switches) is not loaded.
NO_STORAGE = "per-guild plugin switches need the storage plugin, which is not loaded"


def _states(app: wisp.Wisp) -> Any:
    """The ``plugin_state`` service; a clear error when storage is blocked."""
    if "plugin_state" not in app.services:
        raise wisp.UserError(f"Plugins cannot be switched: {NO_STORAGE}.")
    return app.services.get("plugin_state")


@wisp.hookimpl
def wisp_configure(app: wisp.Wisp) -> None:
    if not app.pluginmanager.has_plugin("storage"):
        # Blocking storage must leave the rest of the bot working: every plugin on.
        logger.warning("features: {}; every plugin stays on", NO_STORAGE)


def _switchable(app: wisp.Wisp) -> list[str]:
    """Plugins with commands or event handlers, by name."""
    names = {t.plugin for t in app.targets() if t.plugin is not None}
    return sorted(names - ALWAYS_ON)


def _check_name(app: wisp.Wisp, plugin: str) -> None:
    if plugin not in _switchable(app):
        known = ", ".join(_switchable(app)) or "none"
        raise wisp.UserError(f"No plugin `{plugin}` with commands or events (known: {known}).")


@wisp.hookimpl
def wisp_capabilities() -> list[wisp.Capability]:
    return [wisp.Capability("plugins.manage", "Switch plugins on and off per guild.", "deny")]


@wisp.hookimpl
def wisp_middleware(app: wisp.Wisp, target: Target) -> wisp.Middleware | None:
    plugin = target.plugin
    if target.kind != "command" or plugin is None or plugin in ALWAYS_ON:
        return None
    if not app.pluginmanager.has_plugin("storage"):
        return None  # no switches: every plugin is on (logged at configure)

    async def feature_flag(ctx: wisp.WispContext, call_next: wisp.CallNext) -> Any:
        if ctx.guild_id is not None and not await ctx.service("plugin_state").is_enabled(
            plugin, ctx.guild_id
        ):
            raise wisp.UserError(
                f"`/{ctx.name}` is switched off in this server (plugin `{plugin}`)."
            )
        return await call_next(ctx)

    return wisp.Middleware("feature-flags", feature_flag, wisp.Order.FEATURE_FLAGS)


async def _set(app: wisp.Wisp, plugin: str, guild_id: int, enabled: bool) -> None:
    """Switch, and record the change in the audit log (if the audit plugin runs)."""
    states = _states(app)
    before = await states.is_enabled(plugin, guild_id)
    await states.set_enabled(plugin, guild_id, enabled)
    await audit_api.record(
        app,
        "features.enable" if enabled else "features.disable",
        target=plugin,
        guild_id=guild_id,
        before={"enabled": before},
        after={"enabled": enabled},
    )


async def _switch(ctx: wisp.WispContext, plugin: str, enabled: bool) -> wisp.Response:
    if ctx.guild_id is None:
        raise wisp.UserError("Plugins are switched per server.")
    _check_name(ctx.app, plugin)
    await _set(ctx.app, plugin, ctx.guild_id, enabled)
    return wisp.Response(
        f"`{plugin}` is now {'on' if enabled else 'off'} in this server.", ephemeral=True
    )


@wisp.command(
    name="plugins enable",
    capability="plugins.manage",
    description="Switch a plugin on in this server.",
)
async def plugins_enable(ctx: wisp.WispContext, plugin: str) -> wisp.Response:
    return await _switch(ctx, plugin, True)


@wisp.command(
    name="plugins disable",
    capability="plugins.manage",
    description="Switch a plugin off in this server.",
)
async def plugins_disable(ctx: wisp.WispContext, plugin: str) -> wisp.Response:
    return await _switch(ctx, plugin, False)


@wisp.command(
    name="plugins list",
    capability="plugins.manage",
    description="Which plugins are on in this server.",
)
async def plugins_list(ctx: wisp.WispContext) -> wisp.Response:
    if ctx.guild_id is None:
        raise wisp.UserError("Plugins are switched per server.")
    states = _states(ctx.app)
    lines = []
    for name in _switchable(ctx.app):
        on = await states.is_enabled(name, ctx.guild_id)
        lines.append(f"{'on ' if on else 'off'} {name}")
    return wisp.Response("\n".join(lines) or "No plugins to switch.", ephemeral=True)


# -- wisp plugins enable|disable NAME --guild ID ---------------------------------


async def _cli_switch(app: wisp.Wisp, args: argparse.Namespace) -> int:
    app.configure()
    try:
        _check_name(app, args.name)
    except wisp.UserError as exc:
        print(f"wisp plugins: {exc.safe_message}", file=sys.stderr)
        return 2
    enabled = args.plugins_action == "enable"
    async with app:
        await _set(app, args.name, args.guild, enabled)
    print(f"{args.name} is now {'on' if enabled else 'off'} in guild {args.guild}")
    return 0


@wisp.hookimpl
def wisp_cli_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    if command != "plugins":
        return
    sub = parser.add_subparsers(dest="plugins_action", metavar="ACTION")
    for action in ("enable", "disable"):
        p = sub.add_parser(action, help=f"{action} a plugin's commands and events in a guild")
        p.add_argument("name", help="the plugin, as `wisp plugins` lists it")
        p.add_argument("--guild", type=int, required=True)
        p.set_defaults(wisp_action=_cli_switch)
