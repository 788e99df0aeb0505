"""``wisp ratelimit set|reset|show --guild ID``: per-guild overrides from a shell."""

from __future__ import annotations

import argparse
import sys

import wisp
from wisp.plugins.ratelimit.commands import (
    check_command,
    guild_limits,
    reset_override,
    set_override,
)
from wisp.plugins.ratelimit.limits import LimitError

__all__ = ["COMMANDS"]


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser("set", help="replace a command's limits in a guild")
    # dest "command" is taken by the top-level parser
    s.add_argument(
        "name", metavar="COMMAND", help="the command's name, as `wisp commands list` shows it"
    )
    s.add_argument("limits", nargs="+", help="'3/10s per user' ...; none lifts every limit")
    s.add_argument("--guild", type=int, required=True)
    r = sub.add_parser("reset", help="drop a guild's override of a command")
    r.add_argument("name", metavar="COMMAND")
    r.add_argument("--guild", type=int, required=True)
    sh = sub.add_parser("show", help="a guild's overrides")
    sh.add_argument("--guild", type=int, required=True)


async def _run(app: wisp.Wisp, args: argparse.Namespace) -> int:
    try:
        guilds = guild_limits(app)
        if args.action == "set":
            check_command(app, args.name)
            try:
                specs = [] if [x.lower() for x in args.limits] == ["none"] else args.limits
                limits = await set_override(app, guilds, args.guild, args.name, list(specs))
            except LimitError as exc:
                raise wisp.UserError(str(exc)) from exc
            shown = ", ".join(str(x) for x in limits) or "no limit"
            print(f"{args.name} in guild {args.guild}: {shown}")
        elif args.action == "reset":
            removed = await reset_override(app, guilds, args.guild, args.name)
            print(f"{args.name} in guild {args.guild}: " + ("reset" if removed else "no override"))
        else:
            for name, limits in sorted((await guilds.for_guild(args.guild)).items()):
                print(f"{name}: {', '.join(str(x) for x in limits) or 'no limit'}")
    except wisp.WispError as exc:
        print(f"wisp ratelimit: {exc.safe_message}", file=sys.stderr)
        return 2
    return 0


COMMANDS = [wisp.CliCommand("ratelimit", "per-guild rate-limit overrides", _run, _args, start=True)]
