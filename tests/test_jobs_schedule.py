"""The jobs scheduler: interval and cron grids, catch-up, exactly-once firings
across schedulers on one store, and schedules collected from plugins."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import wisp
from wisp.plugins.jobs.api import Job, JobStatus
from wisp.plugins.jobs.schedule import EPOCH, Schedule, Scheduler, collect_schedules

pytestmark = pytest.mark.needs_plugin("jobs")

T0 = datetime(2025, 3, 28, 10, 7, 30, tzinfo=UTC)  # a Friday


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeJobs:
    """The ``jobs`` service's enqueue, in memory, idempotency keys included."""

    def __init__(self, fail: int = 0, fail_at: set[int] | None = None) -> None:
        self.by_key: dict[str, Job] = {}
        self.calls: list[dict[str, Any]] = []
        self.fail = fail  # the first `fail` calls fail
        self.fail_at = fail_at or set()  # and these calls (1 first)
        self.attempts = 0

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
    ) -> Job:
        self.attempts += 1
        if self.fail or self.attempts in self.fail_at:
            self.fail = max(0, self.fail - 1)
            raise ConnectionError("the store is down")
        self.calls.append({"type": job_type, "key": idempotency_key, "run_at": run_at})
        if idempotency_key in self.by_key:
            return self.by_key[idempotency_key]
        now = datetime.now(UTC)
        job = Job(
            id=f"j{len(self.by_key)}",
            type=job_type,
            payload=payload,
            queue=queue or "default",
            priority=priority,
            status=JobStatus.PENDING,
            attempts=0,
            max_attempts=max_attempts or 5,
            run_at=run_at or now,
            created_at=now,
            updated_at=now,
            idempotency_key=idempotency_key,
        )
        self.by_key[idempotency_key or job.id] = job
        return job

    def instants(self) -> list[datetime]:
        return sorted(job.run_at for job in self.by_key.values())


# -- the grid --------------------------------------------------------------------------


async def test_interval_firings_stay_on_the_grid_under_an_uneven_clock() -> None:
    every = 7.3  # does not divide a minute: drift would show at once
    step = timedelta(seconds=every)
    jobs = FakeJobs()
    clock = Clock()
    scheduler = Scheduler(jobs, [Schedule("beat", "t.beat", every=every, catch_up=5)], clock=clock)
    rng = random.Random(7)
    await scheduler.tick()
    for _ in range(400):
        clock.advance(rng.uniform(0.01, 20.0))  # up to 2 firings a step; some steps none
        await scheduler.tick()
    instants = jobs.instants()
    assert len(instants) > 300
    # Every firing is anchor + k * every, exactly (integer microseconds)...
    assert all((t - EPOCH) % step == timedelta(0) for t in instants)
    # ...none is missed or made twice, and the last is the newest due at the end.
    assert all(b - a == step for a, b in itertools.pairwise(instants))
    assert instants[-1] <= clock.now < instants[-1] + step
    assert instants[0] == Schedule("x", "t", every=every).previous(T0, 5)[-1]  # catch-up
    assert len(jobs.calls) == len(instants)  # each firing enqueued once
    assert [c["key"] for c in jobs.calls] == [f"schedule:beat:{t.isoformat()}" for t in instants]


def test_interval_start_at_anchors_the_grid() -> None:
    start = utc(2025, 1, 1, 9, 0, 5)
    daily = Schedule("d", "t", every=timedelta(days=1), start_at=start)
    assert daily.next_after(utc(2024, 6, 1)) == start  # nothing before start_at
    assert daily.previous(utc(2024, 12, 31), 3) == []
    assert daily.previous(utc(2025, 1, 3, 9, 0, 5), 5) == [
        utc(2025, 1, 3, 9, 0, 5),
        utc(2025, 1, 2, 9, 0, 5),
        start,
    ]
    assert daily.next_after(utc(2025, 1, 3, 9, 0, 5)) == utc(2025, 1, 4, 9, 0, 5)
    hourly = Schedule("h", "t", every=3600)  # the epoch anchor: on the hour
    assert hourly.next_after(T0) == utc(2025, 3, 28, 11)
    assert hourly.key(utc(2025, 3, 28, 11)) == "schedule:h:2025-03-28T11:00:00+00:00"


def nexts(schedule: Schedule, after: datetime, n: int) -> list[datetime]:
    out: list[datetime] = []
    for _ in range(n):
        found = schedule.next_after(after)
        assert found is not None
        out.append(found)
        after = found
    return out


@pytest.mark.parametrize(
    ("cron", "zone", "after", "expected"),
    [
        (
            "*/15 * * * *",
            None,
            T0,
            [utc(2025, 3, 28, 10, 15), utc(2025, 3, 28, 10, 30), utc(2025, 3, 28, 10, 45)],
        ),
        (  # an instant is strictly after `after`
            "*/15 * * * *",
            None,
            utc(2025, 3, 28, 10, 15),
            [utc(2025, 3, 28, 10, 30), utc(2025, 3, 28, 10, 45), utc(2025, 3, 28, 11)],
        ),
        (  # weekdays at 9: Friday's is past, then Monday
            "0 9 * * 1-5",
            None,
            T0,
            [utc(2025, 3, 31, 9), utc(2025, 4, 1, 9), utc(2025, 4, 2, 9)],
        ),
        (  # 9:00 in Paris: 08:00 UTC in winter, 07:00 UTC after the 30 March switch
            "0 9 * * 1-5",
            "Europe/Paris",
            utc(2025, 3, 28, 7),
            [utc(2025, 3, 28, 8), utc(2025, 3, 31, 7), utc(2025, 4, 1, 7)],
        ),
        (  # 02:30 does not exist on 30 March in Paris: cron runs it at 03:00 CEST
            "30 2 * * *",
            "Europe/Paris",
            utc(2025, 3, 29, 12),
            [utc(2025, 3, 30, 1), utc(2025, 3, 31, 0, 30), utc(2025, 4, 1, 0, 30)],
        ),
        (  # 01:30 happens twice on 2 November in New York: once
            "30 1 * * *",
            "America/New_York",
            utc(2025, 11, 1, 12),
            [utc(2025, 11, 2, 5, 30), utc(2025, 11, 3, 6, 30), utc(2025, 11, 4, 6, 30)],
        ),
        ("@monthly", None, T0, [utc(2025, 4, 1), utc(2025, 5, 1), utc(2025, 6, 1)]),
        ("0 0 29 2 *", None, T0, [utc(2028, 2, 29), utc(2032, 2, 29), utc(2036, 2, 29)]),
    ],
)
def test_cron_next_instants(
    cron: str, zone: str | None, after: datetime, expected: list[datetime]
) -> None:
    schedule = Schedule("c", "t", cron=cron, timezone=zone)
    assert nexts(schedule, after, 3) == expected
    # previous() walks the same sequence back, an instant itself included.
    assert schedule.previous(expected[-1], 3) == expected[::-1]
    assert schedule.previous(expected[-1] - timedelta(microseconds=1), 2) == expected[1::-1]


def test_cron_instants_do_not_depend_on_where_the_search_starts() -> None:
    schedule = Schedule("c", "t", cron="*/15 * * * *", timezone="America/New_York")
    expected = nexts(schedule, utc(2025, 11, 2, 4), 12)  # across the autumn fold
    assert expected[-1] - expected[0] == timedelta(minutes=15 * 11)  # no gap, no repeat
    rng = random.Random(3)
    for _ in range(50):
        at = expected[0] + timedelta(seconds=rng.uniform(0, 15 * 11 * 60 - 1))
        found = schedule.next_after(at)
        assert found in expected and found > at and found - at <= timedelta(minutes=15)


# -- catch-up ----------------------------------------------------------------------------


@pytest.mark.parametrize(("catch_up", "made_up"), [(0, 0), (1, 1), (3, 3)])
async def test_catch_up_after_downtime(catch_up: int, made_up: int) -> None:
    minute = Schedule("m", "t", every=60, catch_up=catch_up)
    clock = Clock(utc(2025, 3, 28, 10, 0, 30))
    before = FakeJobs()
    first = Scheduler(before, [minute], clock=clock)
    await first.tick()
    clock.advance(60)
    await first.tick()
    # The process stops; ten minutes later another one starts.
    clock.advance(600)
    jobs = FakeJobs()
    second = Scheduler(jobs, [minute], clock=clock)
    made = await second.tick()
    newest = utc(2025, 3, 28, 10, 11)
    assert [j.run_at for j in made] == [newest - timedelta(minutes=k) for k in range(made_up)][::-1]
    assert jobs.instants() == [j.run_at for j in made]
    assert await second.tick() == []  # nothing new at the same instant
    clock.advance(60)
    assert [j.run_at for j in await second.tick()] == [newest + timedelta(minutes=1)]


async def test_catch_up_cron_and_a_stall_keeps_only_the_newest(log_lines) -> None:
    quarter = Schedule("q", "t", cron="*/15 * * * *", catch_up=2)
    clock = Clock(utc(2025, 3, 28, 10, 20))
    jobs = FakeJobs()
    scheduler = Scheduler(jobs, [quarter], clock=clock)
    assert [j.run_at for j in await scheduler.tick()] == [
        utc(2025, 3, 28, 10, 0),
        utc(2025, 3, 28, 10, 15),
    ]
    clock.advance(2 * 3600)  # the loop stalled for two hours
    assert [j.run_at for j in await scheduler.tick()] == [
        utc(2025, 3, 28, 12, 0),
        utc(2025, 3, 28, 12, 15),
    ]
    assert any(
        "skipped the firings from 2025-03-28T10:30:00+00:00" in r["message"] for r in log_lines
    )


async def test_a_failed_enqueue_is_tried_again(log_lines) -> None:
    clock = Clock(utc(2025, 3, 28, 10, 0, 30))
    jobs = FakeJobs(fail=1)
    scheduler = Scheduler(
        jobs,
        [Schedule("m", "t", every=60), Schedule("n", "t.n", every=60)],
        clock=clock,
    )
    assert [j.type for j in await scheduler.tick()] == ["t.n"]  # "m" failed, "n" went on
    assert any("schedule m: cannot enqueue" in r["message"] for r in log_lines)
    clock.advance(1)
    assert [(j.type, j.run_at) for j in await scheduler.tick()] == [("t", utc(2025, 3, 28, 10, 0))]
    assert scheduler.next_firing() == utc(2025, 3, 28, 10, 1)


async def test_a_failure_midway_keeps_the_firings_after_it() -> None:
    clock = Clock(utc(2025, 3, 28, 10, 3, 30))
    jobs = FakeJobs(fail_at={2})
    scheduler = Scheduler(jobs, [Schedule("m", "t", every=60, catch_up=3)], clock=clock)
    assert [j.run_at for j in await scheduler.tick()] == [utc(2025, 3, 28, 10, 1)]
    clock.advance(10)
    assert [j.run_at for j in await scheduler.tick()] == [
        utc(2025, 3, 28, 10, 2),
        utc(2025, 3, 28, 10, 3),
    ]


async def test_a_tick_at_a_firing_instant_takes_it() -> None:
    clock = Clock(utc(2025, 3, 28, 10, 0, 30))
    jobs = FakeJobs()
    scheduler = Scheduler(jobs, [Schedule("m", "t", every=60, catch_up=0)], clock=clock)
    assert await scheduler.tick() == []
    assert scheduler.next_firing() == utc(2025, 3, 28, 10, 1)
    clock.now = utc(2025, 3, 28, 10, 1)  # run() sleeps until exactly then
    assert [j.run_at for j in await scheduler.tick()] == [utc(2025, 3, 28, 10, 1)]
    assert await scheduler.tick() == []
    assert scheduler.next_firing() == utc(2025, 3, 28, 10, 2)


async def test_run_ticks_on_time_and_survives_errors(log_lines) -> None:
    jobs = FakeJobs(fail=1)
    scheduler = Scheduler(jobs, [Schedule("fast", "t", every=0.1, catch_up=0)], retry_seconds=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    await asyncio.sleep(0.75)
    stop.set()
    await asyncio.wait_for(task, 2)
    instants = jobs.instants()
    assert len(instants) >= 3
    step = timedelta(seconds=0.1)
    assert all((t - EPOCH) % step == timedelta(0) for t in instants)
    assert len(set(instants)) == len(instants)
    assert any("cannot enqueue" in r["message"] for r in log_lines)  # the first firing failed


async def test_run_stops_at_once_between_rare_firings() -> None:
    scheduler = Scheduler(FakeJobs(), [Schedule("yearly", "t", cron="@yearly", catch_up=0)])
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 1)


# -- bad schedules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "schedule 'x': every/cron: give exactly one .* got neither"),
        ({"every": 60, "cron": "* * * * *"}, "schedule 'x': every/cron: .* got both"),
        ({"every": 0}, "schedule 'x': every must be a positive interval, not 0"),
        ({"every": -5.0}, "schedule 'x': every must be a positive interval"),
        ({"every": timedelta(0)}, "schedule 'x': every must be a positive interval"),
        ({"every": float("nan")}, "schedule 'x': every must be finite"),
        ({"every": "60"}, "schedule 'x': every must be seconds .* not '60'"),
        ({"cron": "61 * * * *"}, "schedule 'x': cron '61 \\* \\* \\* \\*' is not a valid .*minute"),
        ({"cron": "0 9 * * MON-XYZ"}, "schedule 'x': cron .* is not a valid .*day-of-week"),
        ({"cron": "0 0 30 2 *"}, "schedule 'x': cron .* is not a valid .*day-of-month"),
        ({"cron": "*/5 * * *"}, "schedule 'x': cron .* has 4 field\\(s\\); expected 5"),
        ({"cron": "0 */5 * * * *"}, "schedule 'x': cron .* has 6 field\\(s\\); expected 5"),
        ({"cron": "every day"}, "schedule 'x': cron 'every day' has 2 field"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone 'Mars/Olympus' is not"),
        ({"every": 60, "timezone": "Europe/Paris"}, "timezone applies to cron schedules only"),
        ({"every": 60, "start_at": datetime(2025, 1, 1)}, "start_at must carry a time zone"),
        ({"cron": "* * * * *", "start_at": T0}, "start_at anchors interval schedules only"),
        ({"every": 60, "catch_up": -1}, "schedule 'x': catch_up must be 0 or more, not -1"),
        ({"every": 60, "payload": {"at": T0}}, "schedule 'x': payload: .*not JSON"),
        ({"every": 60, "max_attempts": 0}, "schedule 'x': max_attempts must be at least 1"),
    ],
)
def test_bad_schedules_say_which_and_why(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule("x", "t", **kwargs)


def test_bad_names() -> None:
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        Schedule(" ", "t", every=1)
    with pytest.raises(ValueError, match="at most 150"):
        Schedule("n" * 151, "t", every=1)
    with pytest.raises(ValueError, match="schedule 'x': job_type must be"):
        Schedule("x", "", every=1)
    with pytest.raises(ValueError, match="unique; repeated: a"):
        Scheduler(FakeJobs(), [Schedule("a", "t", every=1), Schedule("a", "u", every=2)])


# -- exactly once on a real store ----------------------------------------------------------------


@pytest.mark.needs_plugin("storage")
async def test_several_schedulers_enqueue_each_firing_once(project, database) -> None:
    """Three schedulers, each with its own app (its own connection pool, as in
    three worker processes), over one database, tick the same instants at once."""
    url, schema = database
    project.write(
        "wisp.toml",
        f'[storage]\nurl = "{url}"\nschema = "{schema}"\nauto_migrate = true\n',
    )
    schedules = [
        Schedule("every-40s", "t.beat", every=40, catch_up=3, payload={"n": 1}),
        Schedule("quarter", "t.quarter", cron="*/15 * * * *", catch_up=2, priority=5),
        Schedule("paris-9", "t.morning", cron="0 9 * * *", timezone="Europe/Paris"),
    ]
    async with contextlib.AsyncExitStack() as stack:
        apps = []
        for _ in range(3):  # one after the other: the first migrates
            app = project.app(plugins=["storage", "jobs"])
            apps.append(await stack.enter_async_context(app))
        schedulers = [Scheduler(app.services.get("jobs"), schedules) for app in apps]
        now = utc(2025, 3, 28, 8, 31, 10)
        rng = random.Random(11)
        made: dict[str, set[str]] = {}
        for _ in range(12):
            results = await asyncio.gather(*(s.tick(now) for s in schedulers))
            for result in results:
                for job in result:
                    made.setdefault(job.idempotency_key or "", set()).add(job.id)
            # Each scheduler saw the same firings, as the same jobs.
            assert [[j.id for j in r] for r in results[1:]] == [[j.id for j in results[0]]] * 2
            now += timedelta(seconds=rng.uniform(5, 400))
        stored = await apps[0].services.get("jobs").list(limit=1000)

    assert all(len(ids) == 1 for ids in made.values())
    keys = [job.idempotency_key for job in stored]
    assert sorted(keys) == sorted(made)  # one job per firing, no more
    beats = sorted(j.run_at for j in stored if j.type == "t.beat")
    assert beats[:3] == schedules[0].previous(utc(2025, 3, 28, 8, 31, 10), 3)[::-1]
    assert all((t - EPOCH) % timedelta(seconds=40) == timedelta(0) for t in beats)
    quarters = sorted(j.run_at for j in stored if j.type == "t.quarter")
    assert quarters[:2] == [utc(2025, 3, 28, 8, 15), utc(2025, 3, 28, 8, 30)]
    assert all(t.minute % 15 == 0 and t.second == 0 for t in quarters)
    assert all(j.priority == 5 for j in stored if j.type == "t.quarter")
    assert [j.run_at for j in stored if j.type == "t.morning"] == [utc(2025, 3, 28, 8)]
    assert all(j.payload == {"n": 1} for j in stored if j.type == "t.beat")
    for job in stored:
        assert job.idempotency_key == f"schedule:{_name(job.type)}:{job.run_at.isoformat()}"


def _name(job_type: str) -> str:
    return {"t.beat": "every-40s", "t.quarter": "quarter", "t.morning": "paris-9"}[job_type]


# -- collecting schedules from plugins ---------------------------------------------------


def _handlers_and_plugins(project, *plugins: tuple[str, object]) -> wisp.Wisp:
    project.write("wisp.toml", '[wisp]\ncommand_paths = ["bot"]\n')
    project.write(
        "bot/digest.py",
        """
        import wisp

        @wisp.job("digest.send")
        async def send(ctx, payload):
            return None
        """,
    )
    app = project.app(plugins=["jobs"])
    for name, plugin in plugins:
        app.register(plugin, name)
    return app.configure()


class Returns:
    def __init__(self, *schedules: Any) -> None:
        self.schedules = list(schedules)

    @wisp.hookimpl
    def wisp_job_schedules(self, app: wisp.Wisp) -> list[Any]:
        return self.schedules


def test_collect_schedules(project) -> None:
    class Handlers:
        @wisp.hookimpl
        def wisp_job_handlers(self, app: wisp.Wisp) -> dict[str, Any]:
            async def prune(ctx: Any, payload: Any) -> None:
                return None

            return {"cache.prune": prune}

    digest = Schedule("digest", "digest.send", cron="0 9 * * 1-5")
    prune = Schedule("prune", "cache.prune", every=300)
    app = _handlers_and_plugins(
        project, ("handlers", Handlers()), ("alpha", Returns(digest)), ("beta", Returns(prune))
    )
    assert sorted(s.name for s in collect_schedules(app)) == ["digest", "prune"]


def test_collect_schedules_names_the_plugins_at_fault(project) -> None:
    app = _handlers_and_plugins(
        project,
        ("alpha", Returns(Schedule("digest", "digest.send", every=60), "nightly")),
        ("beta", Returns(Schedule("digest", "digest.send", cron="0 * * * *"))),
        ("gamma", Returns(Schedule("orphan", "reports.build", every=60))),
    )
    with pytest.raises(wisp.ConfigError) as info:
        collect_schedules(app)
    problems = info.value.problems
    assert len(problems) == 3, problems
    text = "\n".join(problems)
    assert "schedule 'digest' is defined by several plugins: 'alpha', 'beta'" in text
    assert (
        "schedule 'orphan' of plugin 'gamma': no handler for job type 'reports.build' "
        "(known: digest.send)"
    ) in text
    assert "plugin 'alpha': wisp_job_schedules returned 'nightly', which is not a" in text


def test_a_bad_schedule_in_a_plugin_names_the_plugin(project) -> None:
    class Broken:
        @wisp.hookimpl
        def wisp_job_schedules(self, app: wisp.Wisp) -> list[Schedule]:
            return [Schedule("weekly", "digest.send", cron="0 9 * * 8")]

    app = _handlers_and_plugins(project, ("broken", Broken()))
    with pytest.raises(wisp.PluginError, match=r"'broken'.*schedule 'weekly': cron '0 9 \* \* 8'"):
        collect_schedules(app)
