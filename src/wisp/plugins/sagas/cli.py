"""``wisp sagas list|show|resume|compensate|retry|recover``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

import wisp
from wisp.cli.commands import positive_int
from wisp.plugins.sagas.api import DefinitionChanged, Run, RunStatus
from wisp.plugins.sagas.config import SagasConfig
from wisp.plugins.sagas.engine import check_definition

__all__ = ["COMMANDS", "format_run"]


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _short(value: Any, width: int = 80) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def format_run(run: Run) -> str:
    """A run's history as text: the run, then each step and its compensation."""
    lines = [
        f"run {run.id}: saga {run.saga} v{run.version}, {run.status.value}"
        + (f", key {run.key!r}" if run.key else ""),
        f"  created {run.created_at.isoformat() if run.created_at else '-'}"
        f", finished {run.finished_at.isoformat() if run.finished_at else '-'}",
    ]
    if not run.terminal:
        lease = run.lease_expires_at.isoformat() if run.lease_expires_at else "-"
        lines.append(f"  owner {run.owner or 'none'}, lease until {lease}")
        if run.cancel:
            lines.append("  compensation asked for")
    lines.append(f"  input {_short(run.input)}")
    if run.error:
        lines.append(f"  error {run.error}")
    for i, step in enumerate(run.steps, 1):
        line = (
            f"  {i}. {step.name}: {step.status.value}, attempts {step.attempts}"
            f" (failed {step.failures}), started {_when(step.started_at)}"
            f", finished {_when(step.finished_at)}"
        )
        lines.append(line)
        if step.status.value == "completed":
            lines.append(f"     output {_short(step.output)}")
        if step.error:
            lines.append(f"     error {step.error}")
        if step.deadline and step.status.value == "running":
            lines.append(f"     deadline {_when(step.deadline)}")
        if step.wake_at:
            lines.append(f"     next attempt {_when(step.wake_at)}")
        lines.extend(_interrupted("", step.interruptions, step.suspect))
        if step.comp is not None:
            lines.append(
                f"     compensation {step.comp.value}, attempts {step.comp_attempts}"
                f" (failed {step.comp_failures}), finished {_when(step.comp_finished_at)}"
                + (f", error {step.comp_error}" if step.comp_error else "")
            )
            lines.extend(_interrupted("compensation ", step.comp_interruptions, step.comp_suspect))
    return "\n".join(lines)


def _interrupted(what: str, counted: int, suspect: bool) -> list[str]:
    if not (counted or suspect):
        return []
    alone = ", suspect: its attempts run alone in their process" if suspect else ""
    return [f"     {what}interrupted {counted} time(s) counted{alone}"]


def _line(run: Run) -> str:
    done = sum(1 for s in run.steps if s.status.value == "completed")
    error = f"  {run.error.splitlines()[0][:60]}" if run.error else ""
    return (
        f"{run.id}  {run.status.value:<15} {run.saga:<20} v{run.version} "
        f"steps {done}/{len(run.steps)}{error}"
    )


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="runs, newest first")
    ls.add_argument("--status", choices=[s.value for s in RunStatus])
    ls.add_argument("--saga")
    ls.add_argument("--limit", type=positive_int, default=50)
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    show = sub.add_parser("show", help="one run and its history")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    resume = sub.add_parser("resume", help="drive a run nobody holds here, now")
    resume.add_argument("run_id")
    comp = sub.add_parser("compensate", help="stop a run and undo its completed steps")
    comp.add_argument("run_id")
    retry = sub.add_parser("retry", help="start a compensated run's saga again, as a new run")
    retry.add_argument("run_id")
    rec = sub.add_parser("recover", help="a recovery scan: take over runs whose owner was lost")
    rec.add_argument(
        "--until-done",
        action="store_true",
        help="keep scanning until every run is finished (inline mode: driven here)",
    )


def _no_sagas(app: wisp.Wisp) -> bool:
    if "sagas" in app.services:
        return False
    config: SagasConfig = app.config.section(SagasConfig)
    needs = "storage" if config.backend == "sql" else "redis"
    print(
        f"wisp: sagas are off: [sagas] backend = {config.backend!r} needs the {needs} plugin",
        file=sys.stderr,
    )
    return True


async def _run(app: wisp.Wisp, args: argparse.Namespace) -> int:
    if _no_sagas(app):
        return 2
    service = app.services.get("sagas")
    # This command does what it is asked, and nothing else meanwhile.
    await service.stop_scanning()
    if args.action == "list":
        status = RunStatus(args.status) if args.status else None
        runs = await service.list(status=status, saga=args.saga, limit=args.limit)
        for run in runs:
            print(json.dumps(run.as_dict(), sort_keys=True) if args.json else _line(run))
        if not runs and not args.json:
            print("no saga runs", file=sys.stderr)
        return 0
    if args.action == "recover":
        return await _recover(service, until_done=args.until_done)
    if args.action == "retry":
        try:
            new_id = await service.retry(args.run_id)
        except (KeyError, ValueError) as exc:
            print(f"wisp sagas: {exc.args[0]}", file=sys.stderr)
            return 1
        print(new_id)
        return 0
    run = await service.get(args.run_id)
    if run is None:
        print(f"wisp sagas: no run {args.run_id!r}", file=sys.stderr)
        return 1
    if args.action == "show":
        print(json.dumps(run.as_dict(), indent=2, sort_keys=True) if args.json else format_run(run))
        return 0
    if run.terminal:
        print(
            f"wisp sagas: run {run.id} is {run.status.value}; a finished run never changes",
            file=sys.stderr,
        )
        return 1
    try:
        check_definition(run, service.definitions)
    except DefinitionChanged as exc:
        print(f"wisp sagas: refused: {exc}", file=sys.stderr)
        return 1
    now = datetime.now(UTC)
    held = run.owner is not None and run.lease_expires_at is not None
    live = held and run.lease_expires_at is not None and run.lease_expires_at > now
    if args.action == "compensate":
        after = await service.compensate(run.id)
        if live and after is not None and not after.terminal:
            print(
                f"run {run.id}: asked its owner {run.owner} to compensate; it does at its "
                "next step boundary"
            )
            return 0
    else:
        if live:
            print(
                f"wisp sagas: run {run.id} is held by {run.owner} until "
                f"{run.lease_expires_at}; it is not lost",
                file=sys.stderr,
            )
            return 1
        after = await service.resume(run.id)
    if after is None:  # pragma: no cover - purged meanwhile
        print(f"wisp sagas: run {run.id} vanished", file=sys.stderr)
        return 1
    print(f"run {after.id}: {after.status.value}")
    return 0


async def _recover(service: Any, *, until_done: bool) -> int:
    while True:
        n = await service.recover()
        if service.on_jobs:
            print(f"dispatched {n} run(s) to job workers")
            return 0
        await service.drain()
        if not until_done:
            print(f"recovered {n} run(s)")
            return 0
        left = [
            r
            for status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.COMPENSATING)
            for r in await service.list(status=status, limit=10_000)
        ]
        if not left:
            print("every saga run is finished")
            return 0
        refused = []
        for r in left:
            try:
                check_definition(r, service.definitions)
            except DefinitionChanged as exc:
                refused.append(str(exc))
        if len(refused) == len(left):
            for line in refused:
                print(f"wisp sagas: refused: {line}", file=sys.stderr)
            return 1
        await asyncio.sleep(min(0.2, service.config.heartbeat_seconds))


COMMANDS = [
    wisp.CliCommand(
        "sagas",
        "saga runs: list, show, resume, compensate, retry, recover",
        _run,
        _args,
        start=True,
    ),
]
