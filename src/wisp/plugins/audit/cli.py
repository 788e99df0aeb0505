"""``wisp audit list [--guild ID] [--since T] [--action A] [--limit N] [--json]``."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import wisp
from wisp.cli.commands import positive_int

__all__ = ["COMMANDS", "parse_since"]

_AGO = re.compile(r"^(\d+)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2026-11-25``, ``2026-11-25T18:00`` (UTC unless it has an offset) or a
    span back from now: ``30m``, ``12h``, ``7d``, ``2w``."""
    value = text.strip()
    match = _AGO.match(value.lower())
    if match:
        span = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (now or datetime.now(UTC)) - span
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use ISO 8601 (2026-11-25, 2026-11-25T18:00Z) "
            "or a span back from now (30m, 12h, 7d, 2w)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="audit records, oldest first")
    ls.add_argument("--guild", type=int, help="only this guild's records")
    ls.add_argument(
        "--since", type=parse_since, metavar="T", help="ISO 8601 time, or 30m / 12h / 7d back"
    )
    ls.add_argument(
        "--action",
        dest="what",
        metavar="A",
        help="an action (policy.set) or a prefix ending in '.' (policy.)",
    )
    ls.add_argument("--request", help="only the records of this request id")
    ls.add_argument(
        "--limit", type=positive_int, default=100, help="the newest N records (default 100)"
    )
    ls.add_argument("--json", action="store_true", help="one JSON object a line")


def _describe(e: dict[str, Any]) -> str:
    parts = [e["at"], f"#{e['id']}", e["action"]]
    if e["target"]:
        parts.append(str(e["target"]))
    if e["outcome"]:
        parts.append(f"[{e['outcome']}]")
    parts.append("by " + (f"user {e['actor_id']}" if e["actor_id"] is not None else "-"))
    if e["guild_id"] is not None:
        parts.append(f"in guild {e['guild_id']}")
    if e["request_id"]:
        parts.append(f"(request {e['request_id']})")
    line = " ".join(parts)
    for key in ("before", "after"):
        if e[key] is not None:
            line += f"\n    {key}: {json.dumps(e[key], sort_keys=True)}"
    return line


async def _run(app: wisp.Wisp, args: argparse.Namespace) -> int:
    if "audit" not in app.services:
        print("wisp audit: the audit log is off: it needs the storage plugin", file=sys.stderr)
        return 2
    entries = await app.services.get("audit").list(
        guild_id=args.guild,
        since=args.since,
        action=args.what,
        request_id=args.request,
        limit=args.limit,
    )
    for e in entries:
        print(json.dumps(e, sort_keys=True) if args.json else _describe(e))
    if not entries and not args.json:
        print("no audit records", file=sys.stderr)
    return 0


COMMANDS = (wisp.CliCommand("audit", "the audit log: list", _run, _args, start=True),)
