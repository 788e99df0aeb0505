"""wisp-reminders, offline: the real bot against the fake Discord, SQLite, durable jobs."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import wisp
from wisp.plugins.discord.fake import FakeDiscord, patched_endpoints
from wisp.plugins.discord.offline import OfflineDriver, offline_guild
from wisp.plugins.jobs.api import JobStatus

PLUGINS = ["discord", "storage", "jobs", "reminders"]
FIRE = "reminders.fire"


def project(wisp_project: Any, *, worker: bool, storage: str = "") -> wisp.Wisp:
    wisp_project.write(
        "wisp.toml",
        f"""
        [jobs]
        embedded_worker = {"true" if worker else "false"}
        poll_seconds = 0.05
        backoff_seconds = 0.05
        """
        + storage,
    )
    app: wisp.Wisp = wisp_project.app(plugins=PLUGINS)
    return app


def reminders_sent(fake: FakeDiscord) -> list[str]:
    return [m["content"] for m in fake.messages_sent() if "remind you" in m["content"]]


async def until(predicate: Any, timeout: float = 10.0) -> None:
    """Wait for an effect (not a timing assertion: the timeout only bounds a hang)."""
    async with asyncio.timeout(timeout):
        while not await predicate():  # noqa: ASYNC110 - the effect is in the database
            await asyncio.sleep(0.02)


async def fire_jobs(app: wisp.Wisp) -> list[Any]:
    jobs: list[Any] = await app.services.get("jobs").list(type=FIRE)
    return jobs


async def test_remind_list_cancel(wisp_project: Any, wisp_offline: Any, storage_toml: str) -> None:
    bot = await wisp_offline(project(wisp_project, worker=False, storage=storage_toml))
    answer = await bot.slash("remind", {"in": "2h30m", "text": "stand up"})
    [reply] = answer.replies
    assert reply.startswith("Reminder #1 set for ")
    assert reply.endswith(" UTC (in 2h30m). (ephemeral)") or "(in 2h29m)" in reply

    [job] = await fire_jobs(bot.app)
    assert job.idempotency_key.startswith("reminders:1:")
    assert job.payload == {"reminder_id": 1}
    assert job.status is JobStatus.PENDING
    assert job.run_at - datetime.now(UTC) > timedelta(hours=2)

    at = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0, tzinfo=None)
    answer = await bot.slash("remind", {"at": at.isoformat(), "text": "pay rent"})
    assert answer.replies[0].startswith(f"Reminder #2 set for {at:%Y-%m-%d %H:%M} UTC")

    listing = (await bot.slash("reminders list")).replies
    assert len(listing) == 1
    lines = listing[0].removesuffix(" (ephemeral)").splitlines()
    assert [line.split(" ")[0] for line in lines] == ["#1", "#2"]
    assert lines[0].endswith(": stand up")
    assert lines[1].endswith(": pay rent")

    alice = bot.member_id("alice")
    assert (await bot.slash("reminders list", user=alice)).replies == [
        "You have no pending reminders. (ephemeral)"
    ]
    assert (await bot.slash("reminders cancel", {"id": 1}, user=alice)).replies == [
        "You have no reminder #1. (ephemeral)"
    ]
    assert (await bot.slash("reminders cancel", {"id": 1})).replies == [
        "Reminder #1 cancelled. (ephemeral)"
    ]
    assert (await bot.slash("reminders cancel", {"id": 1})).replies == [
        "Reminder #1 is already cancelled. (ephemeral)"
    ]
    listing = (await bot.slash("reminders list")).replies
    assert listing[0].startswith("#2 ")
    assert "\n" not in listing[0]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"in": "soon", "text": "x"}, "Cannot read the duration 'soon': use numbers with w, d,"),
        ({"in": "10x", "text": "x"}, "Cannot read the duration '10x'"),
        ({"in": "0m", "text": "x"}, "The duration '0m' is zero: give a time in the future."),
        ({"at": "tomorrow", "text": "x"}, "Cannot read the time 'tomorrow': use ISO 8601"),
        ({"at": "2001-01-01T09:00", "text": "x"}, "2001-01-01 09:00:00 UTC is in the past"),
        ({"in": "1000d", "text": "x"}, "That is more than 365 days away"),
        ({"text": "x"}, "Say when: give `in` (like `10m`) or `at` (an ISO time), not both."),
        ({"in": "1m", "at": "2030-01-01", "text": "x"}, "Say when: give `in`"),
        ({"in": "1m", "text": "   "}, "What should I remind you of? The text is empty."),
        ({"in": "1m", "text": "y" * 1001}, "The text is 1001 characters long; the most is 1000."),
    ],
)
async def test_bad_input_is_an_ephemeral_error(
    wisp_project: Any, wisp_offline: Any, options: dict[str, str], error: str
) -> None:
    bot = await wisp_offline(project(wisp_project, worker=False))
    answer = await bot.slash("remind", options)
    [reply] = answer.replies
    assert reply.startswith(error)
    assert reply.endswith("(ephemeral)")
    assert isinstance(answer.outcomes[0].error, wisp.UserError)
    assert await fire_jobs(bot.app) == []  # nothing stored, nothing enqueued
    assert (await bot.slash("reminders list")).replies == [
        "You have no pending reminders. (ephemeral)"
    ]


async def test_fires_once_in_the_bots_own_worker(wisp_project: Any, wisp_offline: Any) -> None:
    bot = await wisp_offline(project(wisp_project, worker=True))
    await bot.slash("remind", {"in": "1s", "text": "tea is ready"})
    owner = bot.fake.default_guild.owner_id
    sent = await bot.fake.wait_for_message(timeout=15)
    assert (
        sent["content"] == f"\N{ALARM CLOCK} <@{owner}>, you asked me to remind you: tea is ready"
    )
    assert sent["channel_id"] == str(bot.fake.default_guild.channels[0].id)
    [post] = bot.fake.calls_to("POST", r"/channels/\d+/messages")
    mentions = post.json["allowed_mentions"]
    assert (mentions["parse"], mentions["users"]) == ([], [owner])  # no @everyone, no roles

    async def completed() -> bool:
        return [j.status for j in await fire_jobs(bot.app)] == [JobStatus.COMPLETED]

    await until(completed)
    assert (await bot.slash("reminders list")).replies == [
        "You have no pending reminders. (ephemeral)"
    ]
    assert (await bot.slash("reminders cancel", {"id": 1})).replies == [
        "Reminder #1 is already sent. (ephemeral)"
    ]


async def test_a_cancelled_reminder_stays_silent(wisp_project: Any, wisp_offline: Any) -> None:
    bot = await wisp_offline(project(wisp_project, worker=True))
    await bot.slash("remind", {"in": "1s", "text": "never mind"})
    await bot.slash("reminders cancel", {"id": 1})

    async def done() -> bool:
        return [j.status for j in await fire_jobs(bot.app)] == [JobStatus.COMPLETED]

    await until(done)
    [job] = await fire_jobs(bot.app)
    assert job.result == {"skipped": "cancelled"}
    assert reminders_sent(bot.fake) == []


async def test_survives_a_restart_and_fires_exactly_once(
    wisp_project: Any, storage_toml: str
) -> None:
    # 1. Scheduled, then the bot stops before anything could fire it (no worker).
    first = FakeDiscord([offline_guild()])
    async with OfflineDriver(
        project(wisp_project, worker=False, storage=storage_toml), first
    ) as bot:
        answer = await bot.slash("remind", {"in": "1s", "text": "after the restart"})
        assert answer.replies[0].startswith("Reminder #1 set for ")
    assert reminders_sent(first) == []

    # 2. Restarted with a worker: the job, stored in the database, fires.
    second = FakeDiscord([offline_guild()])
    async with OfflineDriver(
        project(wisp_project, worker=True, storage=storage_toml), second
    ) as bot:
        sent = await second.wait_for_message(timeout=15)
        assert sent["content"].endswith("you asked me to remind you: after the restart")

        async def completed() -> bool:
            return [j.status for j in await fire_jobs(bot.app)] == [JobStatus.COMPLETED]

        await until(completed)
        # Another reminder, fired in this run, proves the worker kept polling
        # past the first one: had the first job been due again, it would be too.
        await bot.slash("remind", {"in": "1s", "text": "second"})
        await until(lambda: _count(second, 2))
    assert len(reminders_sent(second)) == 2

    # 3. Restarted again: nothing is said twice.
    third = FakeDiscord([offline_guild()])
    async with OfflineDriver(
        project(wisp_project, worker=True, storage=storage_toml), third
    ) as bot:
        await bot.slash("remind", {"in": "1s", "text": "third"})

        async def all_done() -> bool:
            jobs = await fire_jobs(bot.app)
            return [j.status for j in jobs] == [JobStatus.COMPLETED] * 3

        await until(all_done)
        listing = await bot.slash("reminders list")
        assert listing.replies == ["You have no pending reminders. (ephemeral)"]
        statuses = sorted(j.status for j in await fire_jobs(bot.app))
    assert statuses == [JobStatus.COMPLETED] * 3
    assert [m.split(": ")[-1] for m in reminders_sent(third)] == ["third"]


async def _count(fake: FakeDiscord, n: int) -> bool:
    return len(reminders_sent(fake)) >= n


async def test_a_worker_without_the_bot_sends_through_rest(wisp_project: Any) -> None:
    """A separate ``wisp worker`` has no gateway: it logs in with the token."""
    wisp_project.write("wisp.toml", '[discord]\ntoken = "worker-token"\n')
    fake = FakeDiscord([offline_guild()])
    await fake.start()
    app = wisp_project.app(plugins=["discord", "storage", "jobs", "reminders"])
    try:
        with patched_endpoints(fake):
            async with app:
                service = app.services.get("reminders")
                channel = fake.default_guild.channels[0].id
                reminder = await service.create(
                    user_id=42,
                    channel_id=channel,
                    guild_id=fake.default_guild.id,
                    text="from the worker",
                    due_at=datetime.now(UTC) + timedelta(minutes=5),
                )
                assert "discord" not in app.services  # no bot in this process
                result = await service.fire(reminder.id)
                assert result == {"sent": int(fake.messages_sent()[0]["id"])}
                assert await service.fire(reminder.id) == {"skipped": "sent"}
    finally:
        await fake.stop()
    [me] = fake.calls_to("GET", r"/users/@me")
    assert me.status == 200
    assert reminders_sent(fake) == [
        "\N{ALARM CLOCK} <@42>, you asked me to remind you: from the worker"
    ]


async def test_no_token_and_no_bot_is_a_clear_error(wisp_project: Any) -> None:
    wisp_project.write("wisp.toml", "")
    app = wisp_project.app(plugins=["discord", "storage", "jobs", "reminders"])
    async with app:
        service = app.services.get("reminders")
        reminder = await service.create(
            user_id=1,
            channel_id=2,
            guild_id=None,
            text="x",
            due_at=datetime.now(UTC) + timedelta(1),
        )
        with pytest.raises(RuntimeError, match=r"no \[discord\] token \(DISCORD_TOKEN\)"):
            await service.fire(reminder.id)


def test_left_out_without_jobs(wisp_project: Any) -> None:
    app = wisp_project.app(plugins=["storage", "reminders"], block=["jobs"])
    app.configure()
    [failure] = [f for f in app.pluginmanager.failures if f.name == "reminders"]
    assert "requires plugin 'jobs', which is blocked" in str(failure)


async def test_pending_reminders_per_user_are_capped(wisp_project: Any, wisp_offline: Any) -> None:
    wisp_project.write("wisp.toml", "[reminders]\nmax_pending = 2\n")
    bot = await wisp_offline(wisp_project.app(plugins=PLUGINS))
    for n in (1, 2):
        await bot.slash("remind", {"in": f"{n}h", "text": f"#{n}"})
    answer = await bot.slash("remind", {"in": "3h", "text": "#3"})
    assert answer.replies == [
        "You already have 2 pending reminders, the most allowed; cancel one with "
        "`/reminders cancel`. (ephemeral)"
    ]
    await bot.slash("reminders cancel", {"id": 1})
    answer = await bot.slash("remind", {"in": "3h", "text": "#3"})
    assert answer.replies[0].startswith("Reminder #3 set for ")
    assert len(await fire_jobs(bot.app)) == 3


def test_bad_config_names_the_field(wisp_project: Any) -> None:
    wisp_project.write("wisp.toml", "[reminders]\nmax_text = 5000\n")
    with pytest.raises(wisp.ConfigError, match=r"reminders\.max_text: must be between 1 and 1900"):
        wisp_project.app(plugins=PLUGINS).configure()


async def test_deleting_a_users_data(wisp_project: Any, wisp_offline: Any) -> None:
    bot = await wisp_offline(project(wisp_project, worker=False))
    alice = bot.member_id("alice")
    await bot.slash("remind", {"in": "1h", "text": "mine"})
    await bot.slash("remind", {"in": "1h", "text": "hers"}, user=alice)
    assert "wisp_delete_user_data" in bot.app.pluginmanager.hooks_of("reminders")
    service = bot.app.services.get("reminders")
    owner = bot.fake.default_guild.owner_id
    assert await service.delete_user(owner, bot.fake.default_guild.id + 1) == 0
    assert await service.delete_user(owner) == 1
    assert (await bot.slash("reminders list")).replies == [
        "You have no pending reminders. (ephemeral)"
    ]
    assert len((await bot.slash("reminders list", user=alice)).replies) == 1
    # The deleted reminder's job finds nothing to say.
    assert await service.fire(1) == {"skipped": "no such reminder"}


async def test_a_reminder_stored_without_its_job_is_enqueued_at_start(
    wisp_project: Any,
) -> None:
    """A process that died between storing a reminder and enqueueing it."""
    wisp_project.write("wisp.toml", "")
    async with wisp_project.app(plugins=["storage", "jobs", "reminders"]) as app:
        reminder = await app.services.get("reminders").create(
            user_id=1, channel_id=2, guild_id=3, text="x", due_at=datetime.now(UTC) + timedelta(1)
        )
        jobs = app.services.get("jobs")
        [job] = await jobs.list(type=FIRE)
    # Forget the job: as if the enqueue had never happened.
    with sqlite3.connect(wisp_project.root / "wisp.sqlite3") as db:
        db.execute("DELETE FROM jobs")
        db.execute("UPDATE reminders SET job_id = NULL")
    async with wisp_project.app(plugins=["storage", "jobs", "reminders"]) as app:
        [again] = await app.services.get("jobs").list(type=FIRE)
        assert again.id != job.id
        assert again.payload == {"reminder_id": reminder.id}
        assert (await app.services.get("reminders").get(reminder.id)).job_id == again.id


async def test_a_channel_that_is_gone_is_not_retried(wisp_project: Any, wisp_offline: Any) -> None:
    bot = await wisp_offline(project(wisp_project, worker=False))
    service = bot.app.services.get("reminders")
    reminder = await service.create(
        user_id=1, channel_id=999, guild_id=None, text="x", due_at=datetime.now(UTC) + timedelta(1)
    )
    assert await service.fire(reminder.id) == {"undeliverable": "Unknown Channel"}
    assert (await service.get(reminder.id)).status == "undeliverable"
    assert await service.fire(reminder.id) == {"skipped": "undeliverable"}
