"""Discord: a discord.py bot whose slash commands, prefix commands and events run
through Wisp.  Bundled plugin ``discord``; block it with ``-p no:discord``.

``wisp run`` connects with ``[discord] token`` (or ``DISCORD_TOKEN``);
``wisp run --offline`` runs the same bot against a local fake Discord
(:mod:`wisp.plugins.discord.fake`) with a console, and ``--script FILE``
replays a file of console lines.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import wisp
from wisp.plugins.discord.config import KNOWN_INTENTS, DiscordConfig

if TYPE_CHECKING:
    from wisp.plugins.discord.bot import DiscordService

WISP_PLUGIN = wisp.PluginMetadata(
    name="discord",
    description="A discord.py bot whose slash commands, prefix commands and events run "
    "through Wisp; an offline fake Discord.",
    api=">=1.0,<2",
    intents=("guilds",),
    permissions=("send_messages", "use_application_commands"),
    commands=("wisp commands",),
    data="Nothing: it relays Discord traffic and keeps only in-memory caches.",
)

#: The bot service, once ``wisp run`` (or a test) asked for one.
service_key = wisp.StashKey["DiscordService"]()


@wisp.hookimpl
def wisp_addhooks(pluginmanager: Any) -> None:
    from wisp.plugins.discord import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"discord": DiscordConfig}


@wisp.hookimpl
def wisp_configure(app: wisp.Wisp) -> None:
    for intent, plugins in app.pluginmanager.intents().items():
        if intent not in KNOWN_INTENTS:
            raise wisp.PluginError(
                f"plugin {plugins[0]!r} declares the unknown gateway intent {intent!r}; "
                f"known: {', '.join(KNOWN_INTENTS)}"
            )


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    # Only a run (online or offline) connects: `wisp call`, `wisp doctor` and
    # friends never need Discord.
    service = app.stash.get(service_key, None)
    return [service] if service is not None else []


@wisp.hookimpl
def wisp_cli_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    if command == "run":
        parser.add_argument(
            "--offline",
            action="store_true",
            help="run against a local fake Discord, with a console",
        )
        parser.add_argument(
            "--script",
            metavar="FILE",
            help="with --offline: replay FILE's lines, print the transcript, exit non-zero on "
            "an error",
        )


@wisp.hookimpl
def wisp_cli_commands() -> Sequence[wisp.CliCommand]:
    from wisp.plugins.discord.cli import COMMANDS

    return COMMANDS


def enable(app: wisp.Wisp, *, offline: bool, gateway: bool = True) -> DiscordService:
    """Make ``app.start()`` connect a bot (used by ``wisp run`` and the test fixtures);
    ``gateway=False`` only logs in for REST (``wisp serve-interactions``)."""
    from wisp.plugins.discord.bot import DiscordService

    service = DiscordService(
        app, app.config.section(DiscordConfig), offline=offline, gateway=gateway
    )
    app.stash[service_key] = service
    return service


@wisp.hookimpl
async def wisp_run(app: wisp.Wisp, args: argparse.Namespace) -> int | None:
    offline = bool(getattr(args, "offline", False))
    script = getattr(args, "script", None)
    if script and not offline:
        print("wisp run: --script needs --offline", file=sys.stderr)
        return 2
    if offline:
        from wisp.plugins.discord.offline import run_console

        return await run_console(app, script=script)
    if not app.config.section(DiscordConfig).token:
        print(
            "wisp run: no Discord token: set [discord] token or DISCORD_TOKEN, "
            "or try the bot offline with `wisp run --offline`",
            file=sys.stderr,
        )
        return 2
    enable(app, offline=False)
    await app.serve()
    return 0
