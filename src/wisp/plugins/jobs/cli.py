"""``wisp worker`` and ``wisp jobs list|show|retry|purge|enqueue``."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import wisp
from wisp.cli.commands import positive_int
from wisp.plugins.jobs.api import Job, JobStatus
from wisp.plugins.jobs.config import JobsConfig
from wisp.plugins.jobs.worker import Worker

__all__ = ["COMMANDS"]


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def _worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queues", help="comma-separated queues (default: [jobs] queues)")
    p.add_argument("--concurrency", type=positive_int, help="jobs run at once")
    p.add_argument("--name", help="this worker's name in leases (default: host:pid:random)")
    p.add_argument(
        "--burst",
        action="store_true",
        help="stop once no job is due or waiting for a retry (tests, one-off runs)",
    )


def _no_jobs(app: wisp.Wisp) -> bool:
    if "jobs" in app.services:
        return False
    config: JobsConfig = app.config.section(JobsConfig)
    needs = "storage" if config.backend == "sql" else "redis"
    print(
        f"wisp: jobs are off: [jobs] backend = {config.backend!r} needs the {needs} plugin",
        file=sys.stderr,
    )
    return True


async def _run_worker(app: wisp.Wisp, args: argparse.Namespace) -> int:
    if _no_jobs(app):
        return 2
    config: JobsConfig = app.config.section(JobsConfig)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    service = app.services.get("jobs")
    worker = Worker(
        app, service.backend, config, queues=queues, concurrency=args.concurrency, name=args.name
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    burst: asyncio.Task[None] | None = None
    if args.burst:
        burst = asyncio.create_task(_stop_when_idle(worker, stop))
    try:
        await worker.run(stop)
    finally:
        if burst is not None:
            burst.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


async def _stop_when_idle(worker: Worker, stop: asyncio.Event) -> None:
    """Set ``stop`` once none of the worker's jobs is running, due, or failed and
    waiting for its retry (a bounded wait); jobs put off into the future are
    not waited for."""
    while True:
        await asyncio.sleep(worker.config.poll_seconds)
        started = worker.started
        if worker.running or await _outstanding(worker):
            continue
        # The checks await: a job claimed meanwhile moved between the statuses
        # they read.  Idle only if nothing started while they ran.
        if worker.started == started and not worker.running:
            stop.set()
            return


async def _outstanding(worker: Worker) -> bool:
    now = datetime.now(UTC)
    for job_type in sorted(worker.app.job_handlers):
        for status in (JobStatus.RUNNING, JobStatus.FAILED, JobStatus.PENDING):
            jobs = await worker.backend.list(status=status, type=job_type, limit=10_000)
            if any(
                j.queue in worker.queues and (status is not JobStatus.PENDING or j.run_at <= now)
                for j in jobs
            ):
                return True
    return False


def _jobs_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="jobs, newest first")
    ls.add_argument("--status", choices=[s.value for s in JobStatus])
    ls.add_argument("--queue")
    ls.add_argument("--type")
    ls.add_argument("--limit", type=positive_int, default=50)
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    show = sub.add_parser("show", help="one job, every field")
    show.add_argument("job_id")
    retry = sub.add_parser("retry", help="run a dead-lettered or failed job again")
    retry.add_argument("job_id")
    purge = sub.add_parser("purge", help="delete finished jobs")
    purge.add_argument("--status", choices=["completed", "dead_letter"], required=True)
    purge.add_argument("--older-than", type=_non_negative, metavar="HOURS", help="only older ones")
    enq = sub.add_parser("enqueue", help="add a job")
    enq.add_argument("job_type")
    enq.add_argument("--payload", default="null", help="JSON (default: null)")
    enq.add_argument("--key", help="idempotency key")
    enq.add_argument("--delay", type=_non_negative, help="seconds from now")
    enq.add_argument("--queue")
    enq.add_argument("--priority", type=int, default=0)


def _line(job: Job) -> str:
    error = f"  {job.error.splitlines()[0][:60]}" if job.error else ""
    return (
        f"{job.id}  {job.status.value:<11} {job.type:<24} queue={job.queue} "
        f"attempts={job.attempts}/{job.max_attempts}{error}"
    )


async def _run_jobs(app: wisp.Wisp, args: argparse.Namespace) -> int:
    if _no_jobs(app):
        return 2
    service = app.services.get("jobs")
    if args.action == "list":
        status = JobStatus(args.status) if args.status else None
        jobs = await service.list(status=status, queue=args.queue, type=args.type, limit=args.limit)
        for job in jobs:
            print(json.dumps(job.as_dict(), sort_keys=True) if args.json else _line(job))
        if not jobs and not args.json:
            print("no jobs", file=sys.stderr)
        return 0
    if args.action in ("show", "retry"):
        job = await (service.get if args.action == "show" else service.retry)(args.job_id)
        if job is None:
            print(f"wisp jobs: no job {args.job_id!r}", file=sys.stderr)
            return 1
        if args.action == "retry" and job.status is not JobStatus.PENDING:
            print(
                f"wisp jobs: job {job.id} is {job.status.value}; only dead_letter or "
                "failed jobs are retried",
                file=sys.stderr,
            )
            return 1
        if args.action == "show":
            print(json.dumps(job.as_dict(), indent=2, sort_keys=True))
        else:
            print(f"job {job.id} is pending again")
        return 0
    if args.action == "purge":
        older = datetime.now(UTC) - timedelta(hours=args.older_than) if args.older_than else None
        n = await service.purge(status=JobStatus(args.status), older_than=older)
        print(f"purged {n} {args.status} job(s)")
        return 0
    if args.job_type not in app.job_handlers:
        known = ", ".join(sorted(app.job_handlers)) or "none"
        print(
            f"wisp jobs: no handler for job type {args.job_type!r} (known: {known}); "
            "nothing enqueued",
            file=sys.stderr,
        )
        return 2
    try:
        payload: Any = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        print(f"wisp jobs: --payload is not JSON: {exc}", file=sys.stderr)
        return 2
    job = await service.enqueue(
        args.job_type,
        payload,
        idempotency_key=args.key,
        delay=args.delay,
        queue=args.queue,
        priority=args.priority,
    )
    print(job.id)
    return 0


COMMANDS = [
    wisp.CliCommand(
        "worker", "run durable jobs until SIGTERM", _run_worker, _worker_args, start=True
    ),
    wisp.CliCommand(
        "jobs", "durable jobs: list, show, retry, purge, enqueue", _run_jobs, _jobs_args, start=True
    ),
]
