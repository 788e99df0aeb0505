"""``wisp migrate``, ``wisp export`` and ``wisp import``: all work without a Discord token."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import wisp
from wisp.plugins import storage

__all__ = ["COMMANDS"]


def _migrate_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.add_parser("upgrade", help="upgrade every plugin's branch to its head (the default)")
    sub.add_parser("status", help="each plugin's current and head revision")
    sub.add_parser("check", help="fail if models and migrations disagree")
    down = sub.add_parser("downgrade", help="move one plugin's branch down")
    down.add_argument("plugin", help="plugin (or branch) name")
    down.add_argument("revision", help="revision id, 'base', or -N steps")
    new = sub.add_parser("new", help="autogenerate a revision into a plugin's folder")
    new.add_argument("plugin", help="plugin (or branch) name")
    new.add_argument("-m", "--message", required=True, help="what the revision does")


async def _migrate(app: wisp.Wisp, args: argparse.Namespace) -> int:
    from wisp.plugins.storage.migrations import MigrationError

    m = storage.migrator(app)
    action = args.action or "upgrade"
    try:
        if action == "status":
            rows = [("PLUGIN", "BRANCH", "CURRENT", "HEAD", "")]
            for s in await m.status():
                state = "no migrations" if s.head is None else ("pending" if s.pending else "ok")
                rows.append(
                    (s.branch.plugin, s.branch.label, s.current or "-", s.head or "-", state)
                )
            widths = [max(len(r[i]) for r in rows) for i in range(5)]
            for r in rows:
                print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
            return 0
        if action == "check":
            diffs = await m.check()
            if diffs:
                print("models and migrations disagree:", file=sys.stderr)
                for d in diffs:
                    print(f"  {d}", file=sys.stderr)
                return 1
            print("models and migrations agree")
            return 0
        if action == "downgrade":
            await m.downgrade(args.plugin, args.revision)
            print(f"downgraded {args.plugin} to {args.revision}")
            return 0
        if action == "new":
            path = await m.new(args.plugin, args.message)
            if path is None:
                print(f"{args.plugin}: the models match the database; nothing written")
            else:
                print(f"created {path}")
            return 0
        moved = await m.upgrade()
        if not moved:
            print("every branch is at its head")
        for s in moved:
            print(f"upgraded {s.branch.label}: {s.current or 'base'} -> {s.head}")
        return 0
    except MigrationError as exc:
        print(f"wisp migrate: {exc}", file=sys.stderr)
        return 1


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guild", type=int, help="only this guild")
    p.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")


async def _export(app: wisp.Wisp, args: argparse.Namespace) -> int:
    from wisp.plugins.storage.transfer import export_document, write_document

    doc = await export_document(app, guild_id=args.guild, progress=_progress)
    write_document(doc, args.output)
    if args.output is not None:
        counts = ", ".join(f"{k}: {len(v)}" for k, v in doc["sections"].items())
        print(f"wrote {args.output} ({counts})", file=sys.stderr)
    return 0


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="a document written by `wisp export`")
    p.add_argument("--dry-run", action="store_true", help="validate only; write nothing")


async def _import(app: wisp.Wisp, args: argparse.Namespace) -> int:
    from wisp.plugins.storage.transfer import ImportRejected, import_document, read_document

    try:
        doc = read_document(args.file)
        counts = await import_document(app, doc, dry_run=args.dry_run, progress=_progress)
    except ImportRejected as exc:
        print(f"wisp import: {args.file} was not imported; nothing changed.", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    verb = "would import" if args.dry_run else "imported"
    print(f"{verb} " + ", ".join(f"{k}: {n}" for k, n in counts.items()))
    return 0


def _progress(section: str, done: int, total: int) -> None:
    if total >= 1000:  # only long sections are worth a progress line
        print(f"  {section}: {done}/{total} rows", file=sys.stderr)


COMMANDS = (
    wisp.CliCommand(
        "migrate", "database migrations, one Alembic branch per plugin", _migrate, _migrate_args
    ),
    wisp.CliCommand(
        "export",
        "write guild data and plugin state as a versioned JSON document",
        _export,
        _export_args,
        start=True,
    ),
    wisp.CliCommand(
        "import",
        "validate, then load an exported document in one transaction",
        _import,
        _import_args,
        start=True,
    ),
)
