"""``wisp serve-interactions [--host H] [--port P]``."""

from __future__ import annotations

import argparse
import sys

import attrs

import wisp
from wisp.plugins.interactions.config import InteractionsConfig

__all__ = ["COMMANDS"]


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (default: [interactions] host)")
    p.add_argument("--port", type=int, help="port to listen on (default: [interactions] port)")


async def _run(app: wisp.Wisp, args: argparse.Namespace) -> int:
    from wisp.plugins.discord.config import DiscordConfig
    from wisp.plugins.interactions import enable, service_key

    config: InteractionsConfig = app.config.section(InteractionsConfig)
    problems = []
    if not config.public_key:
        problems.append("no public key: set [interactions] public_key or DISCORD_PUBLIC_KEY")
    if not app.config.section(DiscordConfig).token:
        problems.append("no Discord token: set [discord] token or DISCORD_TOKEN")
    if args.port is not None and not 0 <= args.port <= 65535:
        problems.append(f"--port {args.port} is not a port (0-65535)")
    if problems:
        for problem in problems:
            print(f"wisp serve-interactions: {problem}", file=sys.stderr)
        return 2
    try:
        service = enable(app, port=args.port)
    except wisp.PluginError as exc:
        print(f"wisp serve-interactions: {exc}", file=sys.stderr)
        return 2
    if args.host:
        service.config = attrs.evolve(service.config, host=args.host)
    assert app.stash[service_key] is service
    await app.serve()
    return 0


COMMANDS = (
    wisp.CliCommand(
        "serve-interactions",
        "serve Discord's HTTP Interactions Endpoint (signed, de-duplicated, stateless)",
        _run,
        _args,
    ),
)
