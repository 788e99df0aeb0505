"""What the contrib reminders and moderation plugins lean on in the framework: a jobs
worker inside the bot's process (``[jobs] embedded_worker``), the offline console's
``~wait`` line, and the fake Discord's timeouts, kicks and bans."""

from __future__ import annotations

import asyncio
from typing import Any

import discord
import pytest

import wisp
from wisp.plugins.discord.offline import run_console

pytestmark = pytest.mark.needs_plugin("discord")

FIRED: list[int] = []


@wisp.job("test.say")
async def say(ctx: wisp.WispContext, payload: Any) -> None:
    """Send through the bot running in this process."""
    FIRED.append(ctx.attempt)
    bot = ctx.service("discord").bot
    await bot.get_partial_messageable(payload["channel"]).send(payload["text"])


@wisp.command(description="Say it later.")
async def later(ctx: wisp.WispContext, text: str) -> str:
    await ctx.service("jobs").enqueue("test.say", {"channel": ctx.channel_id, "text": text})
    return "queued"


def make_app(wisp_project: Any, worker: bool) -> wisp.Wisp:
    wisp_project.write(
        "wisp.toml",
        f"[jobs]\nembedded_worker = {str(worker).lower()}\npoll_seconds = 0.05\n",
    )
    app: wisp.Wisp = wisp_project.app(plugins=["discord", "storage", "jobs", __name__])
    return app


@pytest.mark.needs_plugin("jobs", "storage")
async def test_the_bot_runs_its_own_worker(wisp_project: Any, wisp_offline: Any) -> None:
    FIRED.clear()
    bot = await wisp_offline(make_app(wisp_project, worker=True))
    assert (await bot.slash("later", {"text": "hello from a job"})).replies == ["queued"]
    exchange = await bot.wait(0)
    sent = await bot.fake.wait_for_message(timeout=10)
    assert sent["content"] == "hello from a job"
    assert FIRED == [1]
    assert exchange.line == "~wait 0"


@pytest.mark.needs_plugin("jobs", "storage")
async def test_no_worker_unless_asked(wisp_project: Any, wisp_offline: Any) -> None:
    FIRED.clear()
    bot = await wisp_offline(make_app(wisp_project, worker=False))
    await bot.slash("later", {"text": "never"})
    await asyncio.sleep(0.3)  # several polls' worth: nothing claims it
    [job] = await bot.app.services.get("jobs").list(type="test.say")
    assert job.status.value == "pending"
    assert FIRED == []


@pytest.mark.needs_plugin("jobs", "storage")
async def test_no_worker_outside_a_bot(wisp_project: Any) -> None:
    """``wisp call`` and friends start services without the Discord service."""
    app = make_app(wisp_project, worker=True)
    async with app:
        assert app.services.get("jobs")._worker is None


@pytest.mark.needs_plugin("jobs", "storage")
async def test_the_console_waits_and_shows_what_came(wisp_project: Any, capsys: Any) -> None:
    FIRED.clear()
    script = wisp_project.write("script.txt", "/later text=ding\n~wait 0.5\n~wait x\n~sleep 1\n")
    lines: list[str] = []
    code = await run_console(
        make_app(wisp_project, worker=True), script=str(script), out=lines.append
    )
    assert lines == [
        "> /later text=ding",
        "bot: queued",
        "> ~wait 0.5",
        "bot: ding",
        "> ~wait x",
        "!! the only ~ line is `~wait SECONDS` (0 to 3600)",
        "> ~sleep 1",
        "!! the only ~ line is `~wait SECONDS` (0 to 3600)",
    ]
    assert code == 1  # bad lines fail a script


async def test_the_fake_models_timeouts_kicks_and_bans(
    wisp_project: Any, wisp_offline: Any
) -> None:
    bot = await wisp_offline(wisp_project.app(plugins=["discord"]))
    http = bot.service.bot.http
    guild = bot.fake.default_guild
    alice, bob = bot.member_id("alice"), bot.member_id("bob")

    until = "2030-01-01T00:00:00+00:00"
    member = await http.edit_member(
        guild.id, alice, reason="calm down", communication_disabled_until=until
    )
    assert member["communication_disabled_until"] == until
    assert guild.get_member(alice).communication_disabled_until == until

    await http.kick(bob, guild.id, reason="bye #1")
    assert guild.get_member(bob) is None
    [kick] = bot.fake.calls_to("DELETE", rf"/guilds/{guild.id}/members/{bob}")
    assert (kick.status, kick.reason) == (204, "bye #1")  # the reason decoded
    with pytest.raises(discord.NotFound, match="Unknown Member"):
        await http.kick(bob, guild.id)

    await http.ban(alice, guild.id, 0, reason="raid")
    assert guild.bans == {alice: "raid"}
    assert guild.get_member(alice) is None
    assert (await http.get_ban(alice, guild.id))["reason"] == "raid"
    await http.unban(alice, guild.id)
    assert guild.bans == {}
    with pytest.raises(discord.NotFound, match="Unknown Ban"):
        await http.unban(alice, guild.id)

    with pytest.raises(discord.Forbidden, match="Missing Permissions"):
        await http.ban(guild.owner_id, guild.id, 0)
    assert guild.bans == {}
