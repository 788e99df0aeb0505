"""``wisp commands list`` and ``wisp commands sync [--guild ID]``."""

from __future__ import annotations

import argparse
import json
import sys

import wisp
from wisp.plugins.discord.appcommands import commands_payload
from wisp.plugins.discord.config import DiscordConfig

__all__ = ["COMMANDS"]


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="print the application-command JSON Wisp would sync")
    sync = sub.add_parser("sync", help="upload the slash commands now, changed or not")
    sync.add_argument("--guild", type=int, help="to this guild only (instant)")


async def _run(app: wisp.Wisp, args: argparse.Namespace) -> int:
    if args.action == "list":
        print(json.dumps(commands_payload(app.commands.values()), indent=2))
        return 0
    from wisp.plugins.discord.bot import DiscordService

    config: DiscordConfig = app.config.section(DiscordConfig)
    if not config.token:
        print(
            "wisp commands sync: no Discord token: set [discord] token or DISCORD_TOKEN",
            file=sys.stderr,
        )
        return 2
    service = DiscordService(app, config)
    service.bot = bot = service.build()
    import discord

    try:
        await bot.login(config.token)  # REST only: no gateway needed to sync
        await service.sync(force=True, guild_id=args.guild)
    except discord.LoginFailure:
        print(
            "wisp commands sync: Discord refused the token ([discord] token or DISCORD_TOKEN)",
            file=sys.stderr,
        )
        return 2
    finally:
        await bot.close()
    where = f"guild {args.guild}" if args.guild else "globally"
    print(f"synced {len(service.synced or [])} slash command(s) {where}")
    return 0


COMMANDS = (wisp.CliCommand("commands", "list or sync the bot's slash commands", _run, _args),)
