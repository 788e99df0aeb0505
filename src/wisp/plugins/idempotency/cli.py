"""``wisp idempotency show|cleanup|forget|key``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import wisp
from wisp.plugins.idempotency.api import idempotency_key
from wisp.plugins.idempotency.config import IdempotencyConfig

__all__ = ["COMMANDS"]


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="one key: state, owner, result, times")
    show.add_argument("key")
    sub.add_parser("cleanup", help="delete expired keys (live ones stay)")
    forget = sub.add_parser("forget", help="delete one key whatever its state")
    forget.add_argument("key")
    key = sub.add_parser("key", help="compute the key of an operation (no service needed)")
    key.add_argument("operation")
    key.add_argument("params", nargs="?", default="null", help="JSON (default: null)")
    key.add_argument("--guild", type=int, help="guild (tenant) id")
    key.add_argument("--user", type=int, help="user id")


def _off(app: wisp.Wisp) -> bool:
    if "idempotency" in app.services:
        return False
    config: IdempotencyConfig = app.config.section(IdempotencyConfig)
    needs = "storage" if config.backend == "sql" else "redis"
    print(
        f"wisp idempotency: off: [idempotency] backend = {config.backend!r} needs the "
        f"{needs} plugin",
        file=sys.stderr,
    )
    return True


async def _run(app: wisp.Wisp, args: argparse.Namespace) -> int:
    if args.action == "key":
        try:
            params: Any = json.loads(args.params)
        except json.JSONDecodeError as exc:
            print(f"wisp idempotency key: PARAMS is not JSON: {exc}", file=sys.stderr)
            return 2
        try:
            print(idempotency_key(args.operation, params, guild_id=args.guild, user_id=args.user))
        except (TypeError, ValueError) as exc:
            print(f"wisp idempotency key: {exc}", file=sys.stderr)
            return 2
        return 0
    await app.start()
    try:
        return await _with_service(app, args)
    finally:
        await app.stop()


async def _with_service(app: wisp.Wisp, args: argparse.Namespace) -> int:
    if _off(app):
        return 2
    service = app.services.get("idempotency")
    if args.action == "cleanup":
        n = await service.cleanup()
        print(f"deleted {n} expired key(s)")
        return 0
    try:
        if args.action == "forget":
            if not await service.forget(args.key):
                print(f"wisp idempotency: no key {args.key!r}", file=sys.stderr)
                return 1
            print(f"forgot {args.key}")
            return 0
        record = await service.get(args.key)
    except ValueError as exc:
        print(f"wisp idempotency: {exc}", file=sys.stderr)
        return 2
    if record is None:
        print(f"wisp idempotency: no key {args.key!r}", file=sys.stderr)
        return 1
    print(json.dumps(record.as_dict(), indent=2, sort_keys=True))
    return 0


COMMANDS = [
    wisp.CliCommand(
        "idempotency", "idempotency keys: show, cleanup, forget, key", _run, _args, start=False
    ),
]
