"""Idempotency: the key formula, the command middleware through the offline
Discord, components, two apps on one database, the cleanup schedule, the CLI,
and a bot with the plugin's dependencies blocked.

Backend behaviour (claims, expiry, cleanup, many processes) is in
``test_idempotency_backends.py``, on SQLite, PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

import wisp
from wisp.plugins.discord.fake import FakeDiscord
from wisp.plugins.discord.offline import OfflineDriver, offline_guild
from wisp.plugins.idempotency.api import (
    InProgress,
    State,
    canonical_json,
    idempotency_key,
    idempotent,
)
from wisp.plugins.jobs.schedule import Scheduler, collect_schedules

pytestmark = pytest.mark.needs_plugin("idempotency")

REDIS_URL = os.environ.get("WISP_TEST_REDIS_URL")

# -- the key ----------------------------------------------------------------------------


def test_the_key_is_the_sources_formula() -> None:
    params = {"amount": 5, "currency": "€", "tags": ["a", "b"], "meta": {"z": 1, "a": None}}
    text = (
        '12:34:payments.charge:{"amount":5,"currency":"€","meta":{"a":null,"z":1},"tags":["a","b"]}'
    )
    expected = hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
    assert idempotency_key("payments.charge", params, guild_id=12, user_id=34) == expected
    # Key order never matters; guild and user absent are empty parts.
    reordered = dict(reversed(list(params.items())))
    assert idempotency_key("payments.charge", reordered, guild_id=12, user_id=34) == expected
    bare = hashlib.sha256(b"::ping:null").hexdigest()[:32]
    assert idempotency_key("ping") == bare
    assert len(expected) == 32


def test_keys_differ_by_every_part() -> None:
    base = idempotency_key("op", {"x": 1}, guild_id=1, user_id=2)
    assert base != idempotency_key("op", {"x": 2}, guild_id=1, user_id=2)
    assert base != idempotency_key("op", {"x": 1}, guild_id=9, user_id=2)
    assert base != idempotency_key("op", {"x": 1}, guild_id=1, user_id=9)
    assert base != idempotency_key("op2", {"x": 1}, guild_id=1, user_id=2)


@attrs.frozen
class Order:
    item: str
    quantity: int


def test_canonical_json_is_exact_and_refuses_what_it_cannot_hold() -> None:
    assert canonical_json({"b": [1, 2.5], "a": "é"}) == '{"a":"é","b":[1,2.5]}'
    assert canonical_json(Order("tea", 2)) == '{"item":"tea","quantity":2}'
    with pytest.raises(TypeError, match="not JSON"):
        canonical_json({"when": datetime.now(UTC)})
    with pytest.raises(TypeError, match="not JSON"):
        canonical_json({"x": float("nan")})
    with pytest.raises(ValueError, match="must not contain ':'"):
        idempotency_key("a:b")
    with pytest.raises(ValueError, match="guild_id must be an int"):
        idempotency_key("op", guild_id="12")  # type: ignore[arg-type]


def test_the_cli_computes_the_same_key(wisp_exe: str, project: Any) -> None:
    project.write("wisp.toml", '[wisp]\nautoload = false\nplugins = ["idempotency"]\n')
    out = subprocess.run(
        [
            wisp_exe,
            "idempotency",
            "key",
            "--guild",
            "12",
            "--user",
            "34",
            "shop.buy",
            '{"b":1,"a":2}',
        ],
        cwd=project.root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == idempotency_key("shop.buy", {"a": 2, "b": 1}, guild_id=12, user_id=34)
    bad = subprocess.run(
        [wisp_exe, "idempotency", "key", "shop.buy", "{nope"],
        cwd=project.root,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "PARAMS is not JSON" in bad.stderr


# -- commands through the offline Discord -------------------------------------------------

COMMANDS = """
import asyncio
from pathlib import Path

import discord
import wisp

ROOT = Path(__file__).resolve().parents[1]


def ran(name):
    with open(ROOT / "runs.txt", "a") as f:
        f.write(name + "\\n")


@wisp.command(idempotent=True, description="Pay once per interaction.")
async def pay(ctx, amount: int) -> str:
    ran("pay")
    return f"paid {amount}"


@wisp.command(idempotent=True, description="Slow.")
async def slow(ctx) -> wisp.Response:
    ran("slow")
    (ROOT / "slow-started").touch()
    while not (ROOT / "slow-release").exists():
        await asyncio.sleep(0.02)
    return wisp.Response("slow done", ephemeral=True)


@wisp.command(idempotent="options", idempotency_ttl=60, description="Once per options.")
async def order(ctx, item: str) -> str:
    ran(f"order:{item}")
    return f"ordered {item}"


@wisp.command(description="Not guarded.")
async def plain(ctx) -> str:
    ran("plain")
    return "plain"


@wisp.command(idempotent=True, description="Fails.")
async def broken(ctx) -> str:
    ran("broken")
    raise wisp.UserError("try again")
"""


def _project(project: Any, db: Path, extra: str = "", plugins: str = "") -> None:
    project.write("bot/cmds.py", COMMANDS)
    plugins = plugins or '"storage", "discord", "idempotency"'
    project.write(
        "wisp.toml",
        f'[wisp]\nautoload = false\ncommand_paths = ["bot"]\nplugins = [{plugins}]\n'
        f'[storage]\nurl = "sqlite+aiosqlite:///{db}"\nauto_migrate = true\n'
        f"[idempotency]\nrepeat_wait_seconds = 0.3\n{extra}",
    )


def _runs(project: Any) -> list[str]:
    path = project.root / "runs.txt"
    return path.read_text().split() if path.exists() else []


async def _replay(bot: OfflineDriver, interaction_id: int, *, timeout: float = 10.0) -> Any:
    """Deliver an interaction again (a gateway replay) and return its outcome."""
    assert bot.service is not None
    seen: asyncio.Queue[Any] = asyncio.Queue()

    def listen(kind: str, raw: Any, outcome: wisp.Outcome) -> None:
        if getattr(raw, "id", None) == interaction_id:
            seen.put_nowait(outcome)

    bot.service.listeners.append(listen)
    try:
        await bot.fake.dispatch("INTERACTION_CREATE", bot.fake.interactions[interaction_id].payload)
        async with asyncio.timeout(timeout):
            return await seen.get()
    finally:
        bot.service.listeners.remove(listen)


def _last_interaction(fake: FakeDiscord) -> int:
    return max(fake.interactions)


@pytest.mark.needs_plugin("discord", "storage")
async def test_an_interaction_delivered_twice_runs_once(
    project: Any, tmp_path: Path, wisp_offline: Callable[..., Any]
) -> None:
    _project(project, tmp_path / "db.sqlite3")
    bot = await wisp_offline(project.app())
    first = await bot.slash("pay", {"amount": 5})
    assert first.replies == ["paid 5"]
    interaction_id = _last_interaction(bot.fake)
    again = await _replay(bot, interaction_id)
    assert again.error is None and again.response.content == "paid 5"
    assert _runs(project) == ["pay"]
    # A new interaction is a new request: it runs.
    assert (await bot.slash("pay", {"amount": 5})).replies == ["paid 5"]
    assert _runs(project) == ["pay", "pay"]
    service = bot.app.services.get("idempotency")
    assert service.counters.hits == 1 and service.counters.claims == 2


@pytest.mark.needs_plugin("discord", "storage")
async def test_a_repeat_while_the_first_runs_says_still_working(
    project: Any, tmp_path: Path, wisp_offline: Callable[..., Any]
) -> None:
    _project(project, tmp_path / "db.sqlite3")
    bot = await wisp_offline(project.app())
    first = asyncio.create_task(bot.slash("slow"))
    while not (project.root / "slow-started").exists():
        await asyncio.sleep(0.02)
    repeat = await _replay(bot, _last_interaction(bot.fake))
    assert isinstance(repeat.error, InProgress)
    assert repeat.response.content.startswith("Still working on it")
    assert repeat.response.ephemeral
    (project.root / "slow-release").touch()
    await first
    assert _runs(project) == ["slow"]
    # Once done, a further replay gets the stored reply.
    later = await _replay(bot, _last_interaction(bot.fake))
    assert later.error is None
    assert (later.response.content, later.response.ephemeral) == ("slow done", True)
    assert _runs(project) == ["slow"]


@pytest.mark.needs_plugin("discord", "storage")
async def test_a_repeat_waits_briefly_for_the_first_and_gets_its_reply(
    project: Any, tmp_path: Path, wisp_offline: Callable[..., Any]
) -> None:
    _project(project, tmp_path / "db.sqlite3", plugins='"storage", "discord", "idempotency"')
    project.write(
        "wisp.toml",
        (project.root / "wisp.toml")
        .read_text()
        .replace("repeat_wait_seconds = 0.3", "repeat_wait_seconds = 30"),
    )
    bot = await wisp_offline(project.app())
    first = asyncio.create_task(bot.slash("slow"))
    while not (project.root / "slow-started").exists():
        await asyncio.sleep(0.02)
    repeat = asyncio.create_task(_replay(bot, _last_interaction(bot.fake)))
    await asyncio.sleep(0.3)
    assert not repeat.done()  # waiting for the first, not answering "still working"
    (project.root / "slow-release").touch()
    outcome = await repeat
    await first
    assert outcome.error is None and outcome.response.content == "slow done"
    assert _runs(project) == ["slow"]


@pytest.mark.needs_plugin("discord", "storage")
async def test_options_mode_folds_a_double_submit_into_one(
    project: Any, tmp_path: Path, wisp_offline: Callable[..., Any]
) -> None:
    _project(project, tmp_path / "db.sqlite3")
    bot = await wisp_offline(project.app())
    assert (await bot.slash("order", {"item": "tea"})).replies == ["ordered tea"]
    # A second interaction (a double submit) with the same options: the stored reply.
    assert (await bot.slash("order", {"item": "tea"})).replies == ["ordered tea"]
    assert (await bot.slash("order", {"item": "cake"})).replies == ["ordered cake"]
    # Another user asking the same is another request.
    alice = bot.member_id("alice")
    assert (await bot.slash("order", {"item": "tea"}, user=alice)).replies == ["ordered tea"]
    assert _runs(project) == ["order:tea", "order:cake", "order:tea"]


@pytest.mark.needs_plugin("discord", "storage")
async def test_prefix_commands_unguarded_commands_and_failures(
    project: Any, tmp_path: Path, wisp_offline: Callable[..., Any]
) -> None:
    _project(project, tmp_path / "db.sqlite3")
    bot = await wisp_offline(project.app())
    assert (await bot.say("!pay 7")).replies == ["paid 7"]
    message = next(m for m in bot.fake.messages.values() if m.get("content") == "!pay 7")
    # The gateway delivers the same message again: it does not run again.
    count = len(bot.fake.calls)
    await bot.fake.dispatch("MESSAGE_CREATE", message)
    await asyncio.sleep(0.3)
    assert _runs(project) == ["pay"]
    assert any("paid 7" in json.dumps(c.json) for c in bot.fake.calls[count:])
    # A command without idempotent=... is not guarded.
    await bot.slash("plain")
    await _replay(bot, _last_interaction(bot.fake))
    assert _runs(project).count("plain") == 2
    # A failure frees the key: the same delivery may run again.
    failed = await bot.slash("broken")
    assert failed.replies == ["try again (ephemeral)"]
    await _replay(bot, _last_interaction(bot.fake))
    assert _runs(project).count("broken") == 2


@pytest.mark.parametrize(
    ("store", "database"),
    [("sqlite", "sqlite"), ("postgresql", "postgresql"), ("redis", "sqlite")],
    indirect=["database"],
    ids=["sqlite", "postgresql", "redis"],
)
@pytest.mark.needs_plugin("discord", "redis", "storage")
async def test_two_apps_on_one_store_run_an_interaction_once(
    store: str,
    database: tuple[str, str],
    project: Any,
    wisp_offline: Callable[..., Any],
    request: pytest.FixtureRequest,
) -> None:
    """Two bot processes receive the same interaction (the same shard twice)."""
    url, schema = database
    project.write("bot/cmds.py", COMMANDS)
    toml = (
        '[wisp]\nautoload = false\ncommand_paths = ["bot"]\n'
        'plugins = ["storage", "redis", "discord", "idempotency"]\n'
        f'[storage]\nurl = "{url}"\nschema = "{schema}"\nauto_migrate = true\n'
        # The repeat waits for the first (it ends as soon as the first completes).
        "[idempotency]\nrepeat_wait_seconds = 10\n"
    )
    prefix = f"test:idem:{uuid.uuid4().hex}:"
    if store == "redis":
        redis = request.getfixturevalue("redis_url")  # skipped unset, failed unreachable
        toml += f'backend = "redis"\nredis_prefix = "{prefix}"\n[redis]\nurl = "{redis}"\n'
    project.write("wisp.toml", toml)
    fake = FakeDiscord([offline_guild()])
    one = await wisp_offline(project.app(), fake=fake)
    two = await wisp_offline(project.app(), fake=fake)
    assert one.service is not None and two.service is not None
    outcomes: list[wisp.Outcome] = []
    for bot in (one, two):
        bot.service.listeners.append(lambda kind, raw, outcome: outcomes.append(outcome))
    interaction = await fake.interaction_create("pay", {"amount": 3})
    await one.service.wait_handled(interaction.id)
    await two.service.wait_handled(interaction.id)
    assert _runs(project) == ["pay"]
    assert len(outcomes) == 2
    assert [o.response.content for o in outcomes] == ["paid 3", "paid 3"]
    answered = [c for c in fake.interaction_responses(interaction.id) if c.status == 200]
    assert len(answered) == 1  # Discord took one answer
    if store == "redis":
        client = one.app.services.get("redis").client
        async for name in client.scan_iter(match=prefix + "*"):
            await client.delete(name)


@pytest.mark.needs_plugin("discord", "storage")
def test_bad_command_metadata_fails_start_up_naming_the_command(
    project: Any, tmp_path: Path
) -> None:
    _project(project, tmp_path / "db.sqlite3")
    project.write(
        "bot/bad.py",
        """
import wisp

@wisp.command(idempotent="sometimes", description="Bad.")
async def bad(ctx) -> str:
    return "bad"
""",
    )
    with pytest.raises(wisp.ConfigError, match=r"command 'bad'.*idempotent: 'sometimes'"):
        project.app().configure()


# -- components ---------------------------------------------------------------------------

BUTTONS = """
import asyncio
from pathlib import Path

import discord
import wisp
from wisp.plugins.idempotency.middleware import idempotent_component


CLICKS = []
ROOT = Path(__file__).resolve().parents[1]


def make_view(app):
    class Shop(discord.ui.View):
        @discord.ui.button(label="Buy", custom_id="buy")
        @idempotent_component(lambda: app.services.get("idempotency"))
        async def buy(self, interaction, button):
            CLICKS.append(interaction.id)
            return wisp.Response("bought one", ephemeral=True)

        @discord.ui.button(label="Slow", custom_id="slow")
        @idempotent_component(lambda: app.services.get("idempotency"))
        async def slow(self, interaction, button):
            CLICKS.append(interaction.id)
            (ROOT / "slow-started").touch()
            while not (ROOT / "slow-release").exists():
                await asyncio.sleep(0.02)
            return "bought slowly"

    return Shop(timeout=None)


@wisp.command(description="Open the shop.")
async def shop(ctx) -> wisp.Response:
    return wisp.Response("The shop", view=make_view(ctx.app))
"""


@pytest.mark.needs_plugin("discord", "storage")
async def test_a_double_click_runs_once_and_both_clicks_get_the_answer(
    project: Any, tmp_path: Path, wisp_offline: Callable[..., Any]
) -> None:
    _project(project, tmp_path / "db.sqlite3")
    project.write("bot/shop.py", BUTTONS)
    bot = await wisp_offline(project.app())
    await bot.slash("shop")
    message = next(m for m in bot.fake.messages.values() if m.get("content") == "The shop")
    message_id = int(message["id"])
    first = await bot.fake.component_interaction(message_id, "buy")
    call = await bot.fake.wait_for_interaction_response(first.id, timeout=10)
    assert call.json["data"]["content"] == "bought one"
    # The second click of a double click: the first one's answer, not a second purchase.
    second = await bot.fake.component_interaction(message_id, "buy")
    call = await bot.fake.wait_for_interaction_response(second.id, timeout=10)
    assert call.json["data"]["content"] == "bought one"
    import sys

    module = next(
        m for name, m in sys.modules.items() if name.endswith("shop") and hasattr(m, "CLICKS")
    )
    assert [first.id] == module.CLICKS
    # Another user's click is their own purchase.
    third = await bot.fake.component_interaction(message_id, "buy", user=bot.member_id("alice"))
    await bot.fake.wait_for_interaction_response(third.id, timeout=10)
    assert [first.id, third.id] == module.CLICKS
    # A second click while the first still runs: "still working", privately.
    slow = await bot.fake.component_interaction(message_id, "slow")
    while not (project.root / "slow-started").exists():
        await asyncio.sleep(0.02)
    again = await bot.fake.component_interaction(message_id, "slow")
    call = await bot.fake.wait_for_interaction_response(again.id, timeout=10)
    assert call.json["data"]["content"].startswith("Still working on it")
    assert bot.fake.interactions[again.id].ephemeral
    (project.root / "slow-release").touch()
    call = await bot.fake.wait_for_interaction_response(slow.id, timeout=10)
    assert call.json["data"]["content"] == "bought slowly"
    assert [first.id, third.id, slow.id] == module.CLICKS


# -- cleanup on the jobs scheduler, the CLI, doctor ---------------------------------------------


@pytest.mark.needs_plugin("jobs", "storage")
async def test_cleanup_is_scheduled_on_the_jobs_scheduler(project: Any, tmp_path: Path) -> None:
    project.write(
        "wisp.toml",
        '[wisp]\nautoload = false\nplugins = ["storage", "jobs", "idempotency"]\n'
        f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path / "db.sqlite3"}"\nauto_migrate = true\n'
        "[idempotency]\ncleanup_seconds = 600\n",
    )
    async with project.app() as app:
        (schedule,) = [s for s in collect_schedules(app) if s.name == "idempotency.cleanup"]
        assert schedule.job_type == "idempotency.cleanup" and schedule.describe() == "every 0:10:00"
        service = app.services.get("idempotency")
        async with service.idempotent("old", ttl=0.1) as claim:
            claim.result = 1
        async with service.idempotent("fresh", ttl=3600) as claim:
            claim.result = 2
        await asyncio.sleep(0.3)
        # The scheduler enqueues the firing; a worker would run it like this.
        now = datetime.now(UTC)
        (job,) = await Scheduler(app.services.get("jobs"), [schedule], clock=lambda: now).tick()
        outcome = await app.run_job(job.type, job.payload, job_id=job.id)
        assert outcome.error is None and outcome.value == {"deleted": 1}
        assert await service.get("old") is None
        fresh = await service.get("fresh")
        assert fresh is not None and fresh.state is State.COMPLETED
        assert now - timedelta(seconds=600) < job.run_at <= now


@pytest.mark.needs_plugin("jobs", "storage")
async def test_no_schedule_when_switched_off_and_no_jobs_needed(
    project: Any, tmp_path: Path
) -> None:
    db = tmp_path / "db.sqlite3"
    project.write(
        "wisp.toml",
        '[wisp]\nautoload = false\nplugins = ["storage", "jobs", "idempotency"]\n'
        f'[storage]\nurl = "sqlite+aiosqlite:///{db}"\nauto_migrate = true\n'
        "[idempotency]\ncleanup_seconds = 0\n",
    )
    async with project.app() as app:
        assert not [s for s in collect_schedules(app) if s.name == "idempotency.cleanup"]
    # Without the jobs plugin the service still runs (cleanup by CLI only).
    project.write(
        "wisp.toml",
        '[wisp]\nautoload = false\nplugins = ["storage", "idempotency"]\n'
        f'[storage]\nurl = "sqlite+aiosqlite:///{db}.nojobs"\nauto_migrate = true\n',
    )
    async with project.app() as app:
        assert "idempotency" in app.services


@pytest.mark.needs_plugin("discord")
async def test_without_its_backend_the_bot_still_runs(
    project: Any, tmp_path: Path, log_lines: list[dict[str, Any]], wisp_offline: Callable[..., Any]
) -> None:
    _project(project, tmp_path / "db.sqlite3", plugins='"discord", "idempotency"')
    bot = await wisp_offline(project.app())
    assert "idempotency" not in bot.app.services
    assert (await bot.slash("pay", {"amount": 1})).replies == ["paid 1"]
    messages = [r["message"] for r in log_lines]
    assert any("idempotency is off" in m and "needs the storage plugin" in m for m in messages)
    assert any("command 'pay' is marked idempotent" in m for m in messages)


async def test_the_decorator_needs_a_context_or_a_service() -> None:
    @idempotent("lonely.op")
    async def lonely() -> int:
        return 1

    with pytest.raises(RuntimeError, match="no Wisp context is running"):
        await lonely()
    with pytest.raises(TypeError, match="needs an async function"):
        idempotent("x")(lambda: 1)  # type: ignore[arg-type]


@pytest.mark.needs_plugin("storage")
async def test_the_decorator_keys_by_the_context_guild_and_user(
    project: Any, tmp_path: Path
) -> None:
    project.write(
        "wisp.toml",
        '[wisp]\nautoload = false\nplugins = ["storage", "idempotency"]\n'
        f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path / "db.sqlite3"}"\nauto_migrate = true\n',
    )
    runs: list[tuple[int | None, str]] = []

    @idempotent("gifts.send")
    async def send(ctx: wisp.WispContext, to: str) -> str:
        runs.append((ctx.guild_id, to))
        return f"sent to {to}"

    @wisp.command(description="Gift.")
    async def gift(ctx: wisp.WispContext, to: str) -> str:
        return await send(ctx, to)

    app = project.app()

    class Plugin:
        @wisp.hookimpl
        def wisp_commands(self) -> list[wisp.Command]:
            return [gift]

    app.register(Plugin(), "gifts")
    async with app:
        for guild in (1, 1, 2):
            outcome = await app.call("gift", {"to": "ada"}, guild_id=guild, user_id=7)
            assert outcome.response is not None and outcome.response.content == "sent to ada"
        service = app.services.get("idempotency")
        key = idempotency_key("gifts.send", {"to": "ada"}, guild_id=1, user_id=7)
        record = await service.get(key)
        assert record is not None and record.result == "sent to ada"
    assert runs == [(1, "ada"), (2, "ada")]


@pytest.mark.needs_plugin("storage")
@pytest.mark.slow
def test_cli_show_cleanup_forget_and_doctor(wisp_exe: str, project: Any, tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    project.write(
        "wisp.toml",
        '[wisp]\nautoload = false\nplugins = ["storage", "idempotency"]\n'
        f'[storage]\nurl = "sqlite+aiosqlite:///{db}"\nauto_migrate = true\n',
    )

    async def seed() -> None:
        async with project.app() as app:
            service = app.services.get("idempotency")
            async with service.idempotent("kept", ttl=3600) as claim:
                claim.result = {"ok": True}
            async with service.idempotent("gone", ttl=0.1) as claim:
                claim.result = 1
            await asyncio.sleep(0.3)

    asyncio.run(seed())

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [wisp_exe, *args], cwd=project.root, capture_output=True, text=True, timeout=60
        )

    shown = run("idempotency", "show", "kept")
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["state"] == "completed" and record["result"] == {"ok": True}
    cleaned = run("idempotency", "cleanup")
    assert cleaned.stdout.strip() == "deleted 1 expired key(s)"
    missing = run("idempotency", "show", "gone")
    assert missing.returncode == 1 and "no key 'gone'" in missing.stderr
    assert run("idempotency", "show", "kept").returncode == 0
    forgot = run("idempotency", "forget", "kept")
    assert forgot.returncode == 0 and forgot.stdout.strip() == "forgot kept"
    doctor = run("doctor")
    assert "idempotency (plugin idempotency): sql: no keys; since start: 0 claims" in doctor.stdout


def test_bad_configuration_is_reported_naming_the_keys(project: Any) -> None:
    project.write(
        "wisp.toml",
        '[wisp]\nautoload = false\nplugins = ["idempotency"]\n'
        '[idempotency]\nbackend = "mongo"\nlease_seconds = 0\n',
    )
    with pytest.raises(wisp.ConfigError) as info:
        project.app().configure()
    text = "\n".join(info.value.problems)
    assert "idempotency" in text and "backend" in text and "mongo" in text
    assert "idempotency.lease_seconds: must be greater than 0; got 0" in text


@pytest.mark.needs_plugin("metrics", "storage")
async def test_claims_and_repeats_are_counted_in_metrics(project) -> None:
    db = project.root / "metrics.sqlite3"
    project.write(
        "wisp.toml",
        "[wisp]\nautoload = false\n"
        'plugins = ["storage", "idempotency", "metrics"]\n'
        f'[storage]\nurl = "sqlite+aiosqlite:///{db}"\nauto_migrate = true\n',
    )
    from wisp.plugins.metrics.api import metrics_of

    async with project.app() as app:
        idem = app.services.get("idempotency")
        for _ in range(3):
            async with idem.idempotent("order-1") as claim:
                if not claim.replayed:
                    claim.result = "done"
        with pytest.raises(RuntimeError):
            async with idem.idempotent("order-2"):
                raise RuntimeError("boom")
        registry = metrics_of(app)
        assert registry is not None
        values = {m.name: getattr(m, "value", None) for m in registry}
    assert values["wisp.idempotency.claim.ran"] == 2
    assert values["wisp.idempotency.claim.replayed"] == 2
    assert values["wisp.idempotency.claim.failed"] == 1
