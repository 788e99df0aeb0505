"""``wisp events work`` (a worker: no gateway) and ``wisp events status``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import attrs

import wisp
from wisp.plugins.eventstream.config import EventsConfig

__all__ = ["COMMANDS", "parse_shards", "work"]


def parse_shards(text: str) -> list[int]:
    """``0-3,6`` -> ``[0, 1, 2, 3, 6]``; ``ValueError`` naming the bad part."""
    shards: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi if sep else lo)
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not a shard id or range (like 0-3)") from None
        if first < 0 or last < first:
            raise ValueError(f"{part.strip()!r} is not a range of shard ids (like 0-3)")
        shards.extend(range(first, last + 1))
    return sorted(set(shards))


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    w = sub.add_parser("work", help="consume events and run the handlers (REST only, no gateway)")
    w.add_argument("--group", help="worker pool (default: [events] group)")
    w.add_argument("--consumer", help="this worker's name (default: host-pid-random)")
    w.add_argument("--shards", help="only these shard streams, like 0-3,6 (default: all)")
    s = sub.add_parser("status", help="shard streams: length, pending, lag, owners")
    s.add_argument("--group", help="worker pool (default: [events] group)")


async def work(
    app: wisp.Wisp,
    *,
    offline: bool,
    consumer: str | None,
    shards: Sequence[int] | None,
    prog: str = "wisp events work",
) -> int:
    from wisp.plugins.discord.config import DiscordConfig
    from wisp.plugins.eventstream import enable_worker

    if not app.pluginmanager.has_plugin("discord"):
        print(f"{prog}: the discord plugin is not loaded", file=sys.stderr)
        return 2
    if not offline and not app.config.section(DiscordConfig).token:
        print(f"{prog}: no Discord token: set [discord] token or DISCORD_TOKEN", file=sys.stderr)
        return 2
    try:
        enable_worker(app, offline=offline, consumer=consumer, shards=shards)
    except (wisp.PluginError, wisp.ConfigError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    await app.serve()
    return 0


async def _status(app: wisp.Wisp, config: EventsConfig) -> int:
    from wisp.plugins.eventstream import enable, shard_count

    enable(app)
    await app.start()
    try:
        transport = app.services.get("eventstream").transport
        count = shard_count(app)
        streams = await transport.status(config.group, range(count))
        holders = await transport.holders(config.group)
    finally:
        await app.stop()
    workers = sorted(o for n, o in holders.items() if n.startswith("worker."))
    print(f"transport {transport.name}, group {config.group!r}, {count} shard stream(s)")
    print(f"workers: {len(workers)} live" + (f" ({', '.join(workers)})" if workers else ""))
    for s in streams:
        lag = "?" if s.lag is None else str(s.lag)
        owner = holders.get(f"shard.{s.shard_id}", "-")
        print(
            f"shard {s.shard_id}: {s.name}  length {s.length}  pending {s.pending}  "
            f"lag {lag}  owner {owner}"
        )
    return 0


async def _run(app: wisp.Wisp, args: argparse.Namespace) -> int:
    config: EventsConfig = app.config.section(EventsConfig)
    if args.group:
        try:
            config = attrs.evolve(config, group=args.group)
        except ValueError as exc:
            print(f"wisp events: --group: {exc}", file=sys.stderr)
            return 2
        app.config.sections["events"] = config
    if args.action == "status":
        return await _status(app, config)
    try:
        shards = parse_shards(args.shards) if args.shards else None
    except ValueError as exc:
        print(f"wisp events work: --shards: {exc}", file=sys.stderr)
        return 2
    return await work(app, offline=False, consumer=args.consumer, shards=shards)


COMMANDS = (
    wisp.CliCommand(
        "events", "event streams: work (a worker process), status (streams, lag)", _run, _args
    ),
)
