"""``wisp locks list`` and ``wisp locks status NAME``: what is held, by whom."""

from __future__ import annotations

import argparse
import sys

import wisp
from wisp.plugins.locks.api import LockInfo

__all__ = ["COMMANDS"]


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="locks held now, with token, holder and lease left")
    s = sub.add_parser("status", help="one lock: held or free")
    s.add_argument("name", metavar="NAME", help="the lock's name")


def _line(info: LockInfo) -> str:
    return f"{info.name}  token {info.token}  held by {info.holder}  {info.expires_in:.1f}s left"


async def _run(app: wisp.Wisp, args: argparse.Namespace) -> int:
    if "locks" not in app.services:
        print("wisp locks: the locks service is off (see the log above)", file=sys.stderr)
        return 2
    service = app.services.get("locks")
    kind = service.backend.kind
    if kind == "memory":
        print(
            "wisp locks: the memory backend keeps locks inside the bot's process; "
            "this command sees none (use redis or sql to share them)",
            file=sys.stderr,
        )
    if args.action == "list":
        held = await service.held()
        for info in held:
            print(_line(info))
        if not held:
            print(f"no locks held ({kind})")
        return 0
    info = await service.info(args.name)
    print(_line(info) if info is not None else f"{args.name}: free ({kind})")
    return 0


COMMANDS = [wisp.CliCommand("locks", "distributed locks: list, status", _run, _args, start=True)]
