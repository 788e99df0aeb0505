"""Recurring jobs: schedules, and the scheduler that enqueues their firings.

A :class:`Schedule` fires on a fixed grid: every ``every`` seconds counted
from ``start_at`` (the Unix epoch unless given), or at the instants of a
5-field cron expression in UTC or a named time zone.  The instants never
drift: they come from the grid, never from "the last run plus the interval",
so every process computes the same ones.

The :class:`Scheduler` enqueues one job per firing with the idempotency key
``schedule:{name}:{instant in ISO UTC}``.  Several schedulers (one per
worker process, on several machines) may tick the same firing at once: the
store keeps the first job with that key and hands it back to the others, so
each firing is enqueued exactly once.  Each scheduler remembers in memory the
last instant it handled per schedule; at start-up it looks back
``catch_up`` firings (default 1: the latest firing missed while no
scheduler ran; 0: none).  A firing whose job was purged from the store
before a scheduler restarts can be enqueued again by its catch-up.

Cron expressions are evaluated by `cronsim <https://github.com/cuu508/cronsim>`_
(Debian cron's semantics, DST transitions included).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from cronsim import CronSim, CronSimError
from loguru import logger

from wisp.errors import ConfigError
from wisp.plugins.jobs.api import Job, dumps_payload

if TYPE_CHECKING:
    from wisp.app import Wisp

__all__ = ["EPOCH", "Schedule", "Scheduler", "collect_schedules"]

#: Where interval grids start unless a schedule gives ``start_at``.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The longest schedule name: its idempotency keys must fit the store's 200 characters.
MAX_NAME = 150

# Vixie cron's nicknames, as their 5-field expressions.
_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# How far a cron sequence may step back over instants it already passed
# (cronsim can, around a DST fold) before the scheduler gives up on a lookup.
_MAX_STEPS = 10_000

_SECOND = timedelta(seconds=1)


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must carry a time zone (datetime.now(UTC), say)")
    return value.astimezone(UTC)


@attrs.frozen
class Schedule:
    """A recurring job: ``job_type`` with ``payload``, every ``every`` or at ``cron``.

    ``every``: seconds (a number) or a :class:`~datetime.timedelta`; firings
    at ``start_at + k * every`` for k = 0, 1, 2, ... (``start_at``: an aware
    datetime, the Unix epoch by default, so ``every=3600`` fires on the hour).
    ``cron``: five fields (minute hour day-of-month month day-of-week) or a
    nickname (``@hourly``, ``@daily``, ...), in UTC or the IANA ``timezone``.
    ``catch_up``: how many firings missed while no scheduler ran are
    enqueued when one starts (the newest ones; 1 by default, 0 for none).
    ``queue``, ``priority``, ``max_attempts``: as for ``JobsService.enqueue``.

    Invalid values are a ValueError naming the schedule and the field.
    """

    name: str
    job_type: str
    payload: Any = None
    every: float | timedelta | None = None
    cron: str | None = None
    timezone: str | None = None
    start_at: datetime | None = None
    catch_up: int = 1
    queue: str | None = None
    priority: int = 0
    max_attempts: int | None = None
    _step: timedelta | None = attrs.field(init=False, default=None, eq=False, repr=False)
    _anchor: datetime = attrs.field(init=False, default=EPOCH, eq=False, repr=False)
    _zone: tzinfo = attrs.field(init=False, default=UTC, eq=False, repr=False)
    _expr: str = attrs.field(init=False, default="", eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"schedule {self.name!r}: name must be a non-empty string")
        if len(self.name) > MAX_NAME:
            raise ValueError(
                f"schedule {self.name[:40]!r}...: name is {len(self.name)} characters long; "
                f"at most {MAX_NAME}"
            )
        if not isinstance(self.job_type, str) or not self.job_type:
            raise ValueError(f"schedule {self.name!r}: job_type must be a non-empty string")
        if (self.every is None) == (self.cron is None):
            given = "both" if self.every is not None else "neither"
            raise ValueError(
                f"schedule {self.name!r}: every/cron: give exactly one of every (an interval) "
                f"or cron (an expression); got {given}"
            )
        if self.every is not None:
            self._set("_step", self._interval(self.every))
            if self.timezone is not None:
                raise ValueError(
                    f"schedule {self.name!r}: timezone applies to cron schedules only "
                    "(an interval counts seconds from start_at)"
                )
            if self.start_at is not None:
                if not isinstance(self.start_at, datetime):
                    raise ValueError(
                        f"schedule {self.name!r}: start_at must be a datetime, "
                        f"not {self.start_at!r}"
                    )
                try:
                    self._set("_anchor", _utc(self.start_at, "start_at"))
                except ValueError as exc:
                    raise ValueError(f"schedule {self.name!r}: {exc}") from None
        else:
            if self.start_at is not None:
                raise ValueError(
                    f"schedule {self.name!r}: start_at anchors interval schedules only "
                    "(a cron expression fixes its own instants)"
                )
            self._set("_zone", self._timezone(self.timezone))
            self._set("_expr", self._cron(self.cron))
        if not isinstance(self.catch_up, int) or isinstance(self.catch_up, bool):
            raise ValueError(f"schedule {self.name!r}: catch_up must be a whole number")
        if self.catch_up < 0:
            raise ValueError(
                f"schedule {self.name!r}: catch_up must be 0 or more, not {self.catch_up}"
            )
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise ValueError(f"schedule {self.name!r}: priority must be a whole number")
        if self.queue is not None and (not isinstance(self.queue, str) or not self.queue):
            raise ValueError(f"schedule {self.name!r}: queue must be a non-empty string")
        if self.max_attempts is not None and (
            not isinstance(self.max_attempts, int) or self.max_attempts < 1
        ):
            raise ValueError(
                f"schedule {self.name!r}: max_attempts must be at least 1, "
                f"not {self.max_attempts!r}"
            )
        payload = attrs.asdict(self.payload) if attrs.has(type(self.payload)) else self.payload
        try:
            dumps_payload(payload)
        except TypeError as exc:
            raise ValueError(f"schedule {self.name!r}: payload: {exc}") from None

    def _set(self, field: str, value: Any) -> None:
        object.__setattr__(self, field, value)

    def _interval(self, every: Any) -> timedelta:
        if isinstance(every, timedelta):
            step = every
        elif isinstance(every, int | float) and not isinstance(every, bool):
            if not math.isfinite(every):
                raise ValueError(f"schedule {self.name!r}: every must be finite, not {every}")
            try:
                step = timedelta(seconds=every)
            except OverflowError:
                raise ValueError(f"schedule {self.name!r}: every is too long: {every}") from None
        else:
            raise ValueError(
                f"schedule {self.name!r}: every must be seconds (a number) or a timedelta, "
                f"not {every!r}"
            )
        if step <= timedelta(0):
            raise ValueError(
                f"schedule {self.name!r}: every must be a positive interval, not {every!r}"
            )
        return step

    def _timezone(self, name: Any) -> tzinfo:
        if name is None:
            return UTC
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"schedule {self.name!r}: timezone must be an IANA name such as "
                f"'Europe/Paris', not {name!r}"
            )
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"schedule {self.name!r}: timezone {name!r} is not a known time zone "
                "(an IANA name such as 'Europe/Paris')"
            ) from None

    def _cron(self, cron: Any) -> str:
        if not isinstance(cron, str):
            raise ValueError(
                f"schedule {self.name!r}: cron must be a string such as '*/15 * * * *', "
                f"not {cron!r}"
            )
        text = " ".join(cron.split())
        expr = _NICKNAMES.get(text.lower(), text)
        fields = len(expr.split())
        if fields != 5:
            raise ValueError(
                f"schedule {self.name!r}: cron {cron!r} has {fields} field(s); expected 5 "
                "(minute hour day-of-month month day-of-week)"
            )
        try:
            CronSim(expr, datetime.now(self._zone))
        except CronSimError as exc:
            raise ValueError(
                f"schedule {self.name!r}: cron {cron!r} is not a valid cron expression: {exc}"
            ) from None
        return expr

    # -- the grid ------------------------------------------------------------------

    def next_after(self, t: datetime) -> datetime | None:
        """The first firing strictly after ``t`` (UTC), or None if there is none."""
        t = _utc(t, "t")
        if self._step is not None:
            if t < self._anchor:
                return self._anchor
            return self._anchor + ((t - self._anchor) // self._step + 1) * self._step
        it = CronSim(self._expr, t.astimezone(self._zone))
        for _ in range(_MAX_STEPS):
            try:
                instant = next(it).astimezone(UTC)
            except StopIteration:
                return None
            if instant > t:
                return instant
        return None  # pragma: no cover - a sequence stuck behind t

    def previous(self, t: datetime, count: int = 1) -> list[datetime]:
        """Up to ``count`` firings at or before ``t`` (UTC), newest first."""
        t = _utc(t, "t")
        if count <= 0:
            return []
        if self._step is not None:
            if t < self._anchor:
                return []
            k = (t - self._anchor) // self._step
            return [self._anchor + j * self._step for j in range(k, max(-1, k - count), -1)]
        # Instants fall on whole seconds: the ones before t's next whole second.
        start = t.replace(microsecond=0) + _SECOND
        it = CronSim(self._expr, start.astimezone(self._zone), reverse=True)
        out: list[datetime] = []
        for _ in range(_MAX_STEPS):
            try:
                instant = next(it).astimezone(UTC)
            except StopIteration:
                break
            if instant <= t and (not out or instant < out[-1]):
                out.append(instant)
                if len(out) == count:
                    break
        return out

    def key(self, instant: datetime) -> str:
        """The idempotency key of the firing at ``instant``."""
        return f"schedule:{self.name}:{_utc(instant, 'instant').isoformat()}"

    def describe(self) -> str:
        if self._step is not None:
            return f"every {self._step}"
        zone = f" {self.timezone}" if self.timezone else " UTC"
        return f"cron {self.cron!r}{zone}"


class Enqueuer(Protocol):
    """What the scheduler needs of the ``jobs`` service."""

    async def enqueue(
        self,
        job_type: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        run_at: datetime | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        queue: str | None = None,
    ) -> Job: ...


def _now() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    """Enqueues the firings of ``schedules`` through ``service`` (the ``jobs`` service).

    ``clock`` gives the current time (aware); :meth:`run` reads it, tests call
    :meth:`tick` with times of their own.
    """

    def __init__(
        self,
        service: Enqueuer,
        schedules: Sequence[Schedule],
        *,
        clock: Callable[[], datetime] = _now,
        max_sleep: float = 60.0,
        retry_seconds: float = 5.0,
    ) -> None:
        names = [s.name for s in schedules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"schedule names must be unique; repeated: {', '.join(twice)}")
        if not max_sleep > 0 or not retry_seconds > 0:
            raise ValueError("max_sleep and retry_seconds must be greater than 0")
        self.service = service
        self.schedules = list(schedules)
        self.clock = clock
        self.max_sleep = max_sleep
        self.retry_seconds = retry_seconds
        #: Per schedule: every firing at or before this instant has been handled.
        self.handled: dict[str, datetime] = {}
        self._failing: set[str] = set()

    async def tick(self, now: datetime | None = None) -> list[Job]:
        """Enqueue the firings due at ``now`` (default: the clock) not handled yet,
        oldest first; return their jobs (made now, or by another scheduler before).

        A schedule's first tick looks back ``catch_up`` firings.  Later ticks take
        every firing since the previous one; if a stall left more than
        ``max(catch_up, 1)`` behind, only that many of the newest are enqueued.
        A schedule whose enqueue fails is logged and tried again next tick.
        """
        now = _utc(now if now is not None else self.clock(), "now")
        jobs: list[Job] = []
        for schedule in self.schedules:
            try:
                await self._tick_one(schedule, now, jobs)
            except Exception as exc:
                self._failing.add(schedule.name)
                logger.error(
                    "schedule {}: cannot enqueue its firing(s) ({}: {}); trying again shortly",
                    schedule.name,
                    type(exc).__name__,
                    exc,
                )
            else:
                self._failing.discard(schedule.name)
        return jobs

    async def _tick_one(self, schedule: Schedule, now: datetime, jobs: list[Job]) -> None:
        """Enqueue ``schedule``'s due firings, appending their jobs to ``jobs`` as
        they are made (a failure keeps the ones before it)."""
        last = self.handled.get(schedule.name)
        if last is None and schedule.catch_up == 0:
            self.handled[schedule.name] = now  # nothing missed is made up for
            return
        if last is not None:
            upcoming = schedule.next_after(last)
            if upcoming is None or upcoming > now:
                self.handled[schedule.name] = max(last, now)
                return
        limit = max(schedule.catch_up, 1)
        due = [i for i in schedule.previous(now, limit) if last is None or i > last]
        due.reverse()
        if last is not None and due:
            first = schedule.next_after(last)
            if first is not None and first < due[0]:
                logger.warning(
                    "schedule {}: skipped the firings from {} to before {} "
                    "(catch_up = {} enqueues the newest only)",
                    schedule.name,
                    first.isoformat(),
                    due[0].isoformat(),
                    schedule.catch_up,
                )
        for instant in due:
            job = await self.service.enqueue(
                schedule.job_type,
                schedule.payload,
                idempotency_key=schedule.key(instant),
                run_at=instant,
                priority=schedule.priority,
                max_attempts=schedule.max_attempts,
                queue=schedule.queue,
            )
            self.handled[schedule.name] = instant
            jobs.append(job)
            logger.debug(
                "schedule {}: firing {} is job {}", schedule.name, instant.isoformat(), job.id
            )
        self.handled[schedule.name] = max(last or now, now)

    def next_firing(self, now: datetime | None = None) -> datetime | None:
        """The earliest firing not handled yet (of any schedule), or None.

        A schedule not ticked yet counts from ``now`` (default: the clock).
        The result is in the past when a tick is overdue.
        """
        now = _utc(now if now is not None else self.clock(), "now")
        upcoming = [s.next_after(self.handled.get(s.name, now)) for s in self.schedules]
        found = [t for t in upcoming if t is not None]
        return min(found) if found else None

    async def run(self, stop: asyncio.Event) -> None:
        """Tick at each firing (and at least every ``max_sleep`` seconds) until
        ``stop`` is set.  Errors are logged; the loop goes on."""
        logger.info(
            "scheduler started: {}",
            "; ".join(f"{s.name} ({s.describe()})" for s in self.schedules) or "no schedules",
        )
        while not stop.is_set():
            delay = self.max_sleep
            try:
                await self.tick()
                now = self.clock()
                upcoming = self.next_firing(now)
                if upcoming is not None:
                    delay = min(delay, (upcoming - now).total_seconds())
                if self._failing:
                    delay = min(delay, self.retry_seconds)
            except Exception as exc:
                logger.opt(exception=exc).error("scheduler: tick failed: {}", exc)
                delay = self.retry_seconds
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(delay, 0.001)):
                    await stop.wait()
        logger.info("scheduler stopped")


def collect_schedules(app: Wisp) -> list[Schedule]:
    """The schedules plugins return from ``wisp_job_schedules``.

    A name used twice, a value that is not a :class:`Schedule`, or a job type
    without a handler is a :class:`wisp.ConfigError` naming the plugin(s).
    """
    if not hasattr(app.hook, "wisp_job_schedules"):  # the jobs plugin's hooks are not added
        return []
    problems: list[str] = []
    owners: dict[str, list[str]] = {}
    collected: list[tuple[str, Schedule]] = []
    for plugin_name, result in app.pluginmanager.results("wisp_job_schedules", app=app):
        items = [result] if isinstance(result, Schedule) else result
        try:
            items = list(items)
        except TypeError:
            problems.append(
                f"plugin {plugin_name!r}: wisp_job_schedules returned {result!r}, "
                "not a list of Schedule"
            )
            continue
        for item in items:
            if not isinstance(item, Schedule):
                problems.append(
                    f"plugin {plugin_name!r}: wisp_job_schedules returned {item!r}, "
                    "which is not a wisp.plugins.jobs.schedule.Schedule"
                )
                continue
            owners.setdefault(item.name, []).append(plugin_name)
            collected.append((plugin_name, item))
    found: list[Schedule] = []
    reported: set[str] = set()
    for plugin_name, item in collected:
        defined = owners[item.name]
        if len(defined) > 1:
            if item.name not in reported:
                reported.add(item.name)
                plugins = sorted(set(defined))
                by = (
                    f"{len(defined)} times by plugin {plugins[0]!r}"
                    if len(plugins) == 1
                    else "by several plugins: " + ", ".join(map(repr, plugins))
                )
                problems.append(f"schedule {item.name!r} is defined {by}")
            continue
        if item.job_type not in app.job_handlers:
            known = ", ".join(sorted(app.job_handlers)) or "none"
            problems.append(
                f"schedule {item.name!r} of plugin {plugin_name!r}: no handler for job "
                f"type {item.job_type!r} (known: {known})"
            )
            continue
        found.append(item)
    if problems:
        raise ConfigError(problems)
    return found
