"""wisp-moderation, offline: the real bot against the fake Discord, with policy,
audit, jobs and storage on SQLite."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import wisp
from wisp.plugins.discord.fake import DEFAULT_CHANNEL_ID, FakeDiscord, FakeRole
from wisp.plugins.discord.offline import offline_guild

PLUGINS = ["discord", "storage", "jobs", "policy", "audit", "moderation"]


def make_app(wisp_project: Any, toml: str = "", storage: str = "") -> wisp.Wisp:
    wisp_project.write(
        "wisp.toml",
        """
        [jobs]
        embedded_worker = true
        poll_seconds = 0.05
        backoff_seconds = 0.05
        """
        + toml
        + storage,
    )
    app: wisp.Wisp = wisp_project.app(plugins=PLUGINS)
    return app


async def until(predicate: Any, timeout: float = 10.0) -> None:
    """Wait for an effect (the timeout only bounds a hang)."""
    async with asyncio.timeout(timeout):
        while not await predicate():  # noqa: ASYNC110 - the effect is in the database
            await asyncio.sleep(0.02)


def only(exchange: Any) -> str:
    [reply] = exchange.replies
    return str(reply)


async def test_actions_make_numbered_cases(
    wisp_project: Any, wisp_offline: Any, storage_toml: str
) -> None:
    bot = await wisp_offline(make_app(wisp_project, storage=storage_toml))
    guild = bot.fake.default_guild
    alice, bob = bot.member_id("alice"), bot.member_id("bob")

    reply = only(await bot.slash("warn", {"user": alice, "reason": "spam"}))
    assert reply == f"Case #1: <@{alice}> warned. Reason: spam"

    reply = only(await bot.slash("timeout", {"user": bob, "duration": "10m", "reason": "heat"}))
    assert reply == f"Case #2: <@{bob}> timed out for 10m. Reason: heat"
    [patch] = bot.fake.calls_to("PATCH", rf"/guilds/{guild.id}/members/{bob}")
    assert patch.reason == "heat"
    assert (
        guild.get_member(bob).communication_disabled_until
        == (patch.json["communication_disabled_until"])
    )

    reply = only(await bot.slash("kick", {"user": bob, "reason": "again"}))
    assert reply == f"Case #3: <@{bob}> kicked. Reason: again"
    assert guild.get_member(bob) is None
    [kick] = bot.fake.calls_to("DELETE", rf"/guilds/{guild.id}/members/{bob}")
    assert kick.reason == "again"

    reply = only(await bot.slash("ban", {"user": alice, "reason": "raiding"}))
    assert reply == f"Case #4: <@{alice}> banned. Reason: raiding"
    assert guild.bans == {alice: "raiding"}
    assert guild.get_member(alice) is None

    shown = only(await bot.slash("case", {"number": 2}))
    assert shown.startswith(f"Case #2: timeout <@{bob}> by <@{guild.owner_id}>, ")
    assert shown.endswith(": heat (for 10m, until " + shown.split("until ")[1])
    assert shown.endswith(" UTC) (ephemeral)")

    listing = only(await bot.slash("cases", {"user": alice})).removesuffix(" (ephemeral)")
    lines = listing.splitlines()
    assert [line.split(":")[0] for line in lines] == ["Case #1", "Case #4"]
    assert lines[0].startswith(f"Case #1: warn <@{alice}> by <@{guild.owner_id}>, ")
    assert lines[1].endswith(": raiding")
    owner = guild.owner_id
    assert only(await bot.slash("cases", {"user": owner})) == (
        f"<@{owner}> has no cases here. (ephemeral)"
    )


async def test_every_action_is_audited(wisp_project: Any, wisp_offline: Any) -> None:
    bot = await wisp_offline(make_app(wisp_project))
    alice = bot.member_id("alice")
    await bot.slash("warn", {"user": alice, "reason": "one"})
    await bot.slash("ban", {"user": alice, "reason": "two", "duration": "1d"})
    records = await bot.app.services.get("audit").list(action="moderation.")
    assert [r["action"] for r in records] == ["moderation.warn", "moderation.ban"]
    ban = records[1]
    assert ban["actor_id"] == bot.fake.default_guild.owner_id
    assert ban["guild_id"] == bot.fake.default_guild.id
    assert ban["target"] == f"user:{alice}"
    assert ban["detail"] == {"case": 2}
    assert ban["after"]["reason"] == "two"
    assert ban["after"]["expires_at"] is not None


async def test_capabilities_are_denied_by_default(wisp_project: Any, wisp_offline: Any) -> None:
    bot = await wisp_offline(make_app(wisp_project))
    alice, bob = bot.member_id("alice"), bot.member_id("bob")
    for command, options in [
        ("warn", {"user": bob, "reason": "x"}),
        ("timeout", {"user": bob, "duration": "1m", "reason": "x"}),
        ("kick", {"user": bob, "reason": "x"}),
        ("ban", {"user": bob, "reason": "x"}),
        ("case", {"number": 1}),
        ("cases", {"user": bob}),
    ]:
        capability = "cases" if command in ("case", "cases") else command
        reply = only(await bot.slash(command, options, user=alice))
        assert reply.startswith(f"You need the `moderation.{capability}` capability to do that.")
    assert bot.fake.default_guild.get_member(bob) is not None

    # A rule hands one capability on; the others stay denied.
    rule = {
        "capability": "moderation.warn",
        "decision": "allow",
        "scope": "user",
        "target": str(alice),
    }
    assert only(await bot.slash("policy set", rule)).startswith("Added #1 allow")
    reply = only(await bot.slash("warn", {"user": bob, "reason": "x"}, user=alice))
    assert reply == f"Case #1: <@{bob}> warned. Reason: x"
    reply = only(await bot.slash("kick", {"user": bob, "reason": "x"}, user=alice))
    assert reply.startswith("You need the `moderation.kick` capability")


async def test_a_timed_ban_is_lifted_by_a_job(
    wisp_project: Any, wisp_offline: Any, storage_toml: str
) -> None:
    toml = f"[moderation]\nlog_channel = {DEFAULT_CHANNEL_ID}\n"
    app = make_app(wisp_project, toml, storage=storage_toml)
    bot = await wisp_offline(app)
    guild = bot.fake.default_guild
    alice = bot.member_id("alice")
    reply = only(await bot.slash("ban", {"user": alice, "reason": "cool off", "duration": "1s"}))
    assert reply == f"Case #1: <@{alice}> banned for 1s. Reason: cool off"
    assert alice in guild.bans

    sent = await bot.fake.wait_for_message(timeout=15)
    assert sent["content"] == f"Case #2: <@{alice}> unbanned, ban (case #1) expired."
    assert guild.bans == {}
    [unban] = bot.fake.calls_to("DELETE", rf"/guilds/{guild.id}/bans/{alice}")
    assert unban.reason == "Case #1 expired"

    listing = only(await bot.slash("cases", {"user": alice})).removesuffix(" (ephemeral)")
    ban_line, unban_line = listing.splitlines()
    assert ban_line.endswith(", lifted)")
    assert unban_line.startswith(f"Case #2: unban <@{alice}> by the bot, ")
    assert unban_line.endswith(": Ban (case #1) expired.")

    async def lifted() -> bool:
        jobs = await app.services.get("jobs").list(type="moderation.unban")
        return [j.status.value for j in jobs] == ["completed"]

    await until(lifted)
    # Run again (a worker that died before recording success): nothing twice.
    case = await app.services.get("moderation").case(guild.id, 1)
    assert await app.services.get("moderation").lift(case.id) == {"skipped": "already lifted"}
    assert len(await app.services.get("moderation").cases_of(guild.id, alice)) == 2


@pytest.mark.parametrize(
    ("command", "options", "error"),
    [
        ("warn", {"reason": "   "}, "Give a reason: it goes in the case log."),
        ("warn", {"reason": "r" * 513}, "The reason is 513 characters long; the most is 512."),
        ("kick", {"user": "owner", "reason": "x"}, "You cannot moderate yourself."),
        ("ban", {"reason": "x", "duration": "soon"}, "Cannot read the duration 'soon'"),
        ("timeout", {"duration": "0s", "reason": "x"}, "The duration '0s' is zero."),
        (
            "timeout",
            {"duration": "29d", "reason": "x"},
            "Discord times out for 28 days at most, not 4w1d.",
        ),
        ("case", {"number": 7}, "There is no case #7 in this server."),
    ],
)
async def test_bad_input_is_an_ephemeral_error(
    wisp_project: Any, wisp_offline: Any, command: str, options: dict[str, Any], error: str
) -> None:
    bot = await wisp_offline(make_app(wisp_project))
    if command != "case":
        who = options.get("user", "alice")
        options = {**options, "user": bot.member_id(who)}
    answer = await bot.slash(command, options)
    reply = only(answer)
    assert reply.startswith(error)
    assert reply.endswith(" (ephemeral)")
    assert isinstance(answer.outcomes[0].error, wisp.UserError)
    assert await bot.app.services.get("moderation").cases_of(bot.fake.default_guild.id, 0) == []
    assert len(bot.fake.calls_to("DELETE", r"/guilds/")) == 0


async def test_discord_refusing_records_no_case(wisp_project: Any, wisp_offline: Any) -> None:
    bot = await wisp_offline(make_app(wisp_project))
    guild = bot.fake.default_guild
    alice = bot.member_id("alice")
    rule = {
        "capability": "moderation.*",
        "decision": "allow",
        "scope": "user",
        "target": str(alice),
    }
    await bot.slash("policy set", rule)
    # Above the bot (here: the owner, asked from the shell): Discord refuses.
    service = bot.app.services.get("moderation")
    with pytest.raises(wisp.UserError, match=r"Discord refused to ban <@\d+>: Missing Permissions"):
        await service.act(
            "ban", guild_id=guild.id, user_id=guild.owner_id, moderator_id=None, reason="coup"
        )
    await bot.fake.member_remove(bot.member_id("bob"))
    bob = 1191168914227200103
    reply = only(await bot.slash("kick", {"user": bob, "reason": "gone"}, user=alice))
    assert reply == f"<@{bob}> is not in this server (Unknown Member). (ephemeral)"
    service = bot.app.services.get("moderation")
    assert await service.cases_of(guild.id, guild.owner_id) == []
    assert await service.cases_of(guild.id, bob) == []


async def test_case_numbers_are_per_guild(wisp_project: Any, storage_toml: str) -> None:
    wisp_project.write("wisp.toml", storage_toml)
    async with wisp_project.app(plugins=["storage", "jobs", "policy", "moderation"]) as app:
        service = app.services.get("moderation")
        numbers = []
        for guild in (10, 20, 10, 10, 20):
            case = await service.open_case(
                guild_id=guild, action="warn", user_id=5, moderator_id=6, reason="r"
            )
            numbers.append((guild, case.number))
        # Moderators acting at once still get distinct numbers.
        many = await asyncio.gather(
            *(
                service.open_case(guild_id=30, action="warn", user_id=5, moderator_id=6, reason="r")
                for _ in range(10)
            )
        )
    assert numbers == [(10, 1), (20, 1), (10, 2), (10, 3), (20, 2)]
    assert sorted(c.number for c in many) == list(range(1, 11))


def wisp_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    plugins = ["-p", "storage", "-p", "jobs", "-p", "policy", "-p", "moderation"]
    return subprocess.run(
        [sys.executable, "-m", "wisp", "--rootdir", str(root), "--no-autoload", *plugins, *args],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "WISP_LOG_LEVEL": "ERROR"},
    )


async def test_cases_are_exported_and_imported(wisp_project: Any, storage_toml: str) -> None:
    wisp_project.write("wisp.toml", storage_toml)
    async with wisp_project.app(plugins=["storage", "jobs", "policy", "moderation"]) as app:
        service = app.services.get("moderation")
        for guild, action in ((10, "warn"), (20, "kick"), (10, "ban")):
            await service.open_case(
                guild_id=guild, action=action, user_id=5, moderator_id=6, reason=action
            )
    out = wisp_project.root / "export.json"
    done = wisp_cli(wisp_project.root, "export", "--guild", "10", "-o", str(out))
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    rows = doc["sections"]["moderation_cases"]
    assert [(r["guild_id"], r["number"], r["action"]) for r in rows] == [
        (10, 1, "warn"),
        (10, 2, "ban"),
    ]
    assert "id" not in rows[0]

    # Edit and import: guild 10's cases are replaced, guild 20's untouched.
    rows[1]["reason"] = "edited"
    out.write_text(json.dumps(doc))
    done = wisp_cli(wisp_project.root, "import", str(out))
    assert done.returncode == 0, done.stderr
    assert "moderation_cases: 2" in done.stdout
    async with wisp_project.app(plugins=["storage", "jobs", "policy", "moderation"]) as app:
        service = app.services.get("moderation")
        assert [c.reason for c in await service.cases_of(10, 5)] == ["warn", "edited"]
        assert [c.reason for c in await service.cases_of(20, 5)] == ["kick"]

    # A bad document is refused whole, naming each problem.
    rows[0]["action"] = "explode"
    rows[1]["number"] = 1
    rows[1]["guild_id"] = 20
    out.write_text(json.dumps(doc))
    done = wisp_cli(wisp_project.root, "import", str(out))
    assert done.returncode == 1
    assert "nothing changed" in done.stderr
    assert (
        "moderation_cases[0].action: expected one of warn, timeout, kick, ban, unban, "
        "got 'explode'" in done.stderr
    )
    assert "moderation_cases[1].guild_id: 20 is not the document's guild 10" in done.stderr


def test_left_out_without_storage(wisp_project: Any) -> None:
    app = wisp_project.app(plugins=["moderation"], block=["storage"])
    app.configure()
    [failure] = [f for f in app.pluginmanager.failures if f.name == "moderation"]
    assert "requires plugin 'storage', which is blocked" in failure.message


def test_left_out_without_policy(wisp_project: Any) -> None:
    """Nobody would check the capabilities: no moderation at all, rather than for anyone."""
    app = wisp_project.app(plugins=["storage", "moderation"], block=["policy"])
    app.configure()
    [failure] = [f for f in app.pluginmanager.failures if f.name == "moderation"]
    assert "requires plugin 'policy', which is blocked" in failure.message
    assert "ban" not in app.commands


async def test_deleting_a_users_data(wisp_project: Any, wisp_offline: Any) -> None:
    bot = await wisp_offline(make_app(wisp_project))
    guild = bot.fake.default_guild
    alice, bob = bot.member_id("alice"), bot.member_id("bob")
    rule = {"capability": "moderation.*", "decision": "allow", "scope": "user", "target": str(bob)}
    await bot.slash("policy set", rule)
    await bot.slash("warn", {"user": alice, "reason": "one"}, user=bob)
    await bot.slash("warn", {"user": bob, "reason": "two"})
    await bot.slash("ban", {"user": alice, "reason": "three", "duration": "1s"})
    assert "wisp_delete_user_data" in bot.app.pluginmanager.hooks_of("moderation")
    service = bot.app.services.get("moderation")
    assert await service.delete_user(bob, guild.id + 1) == {  # another guild: nothing
        "moderation cases": 0,
        "moderation cases as moderator": 0,
    }
    assert await service.delete_user(bob) == {
        "moderation cases": 1,
        "moderation cases as moderator": 1,
    }
    assert only(await bot.slash("case", {"number": 1})).startswith(
        f"Case #1: warn <@{alice}> by a former moderator, "
    )
    assert await service.delete_user(alice) == {
        "moderation cases": 2,
        "moderation cases as moderator": 0,
    }
    assert await service.cases_of(guild.id, alice) == []

    # The ban's case is gone, but the ban still ends, with no case recorded.
    async def lifted() -> bool:
        jobs = await bot.app.services.get("jobs").list(type="moderation.unban")
        return [j.status.value for j in jobs] == ["completed"]

    await until(lifted)
    assert alice not in guild.bans
    assert await service.case(guild.id, 4) is None
    [*_, last] = await bot.app.services.get("audit").list(action="moderation.unban")
    assert last["target"] == f"user:{alice}"
    assert last["detail"]["case"] is None


async def test_a_later_ban_supersedes_a_timed_one(wisp_project: Any, wisp_offline: Any) -> None:
    app = make_app(wisp_project)
    bot = await wisp_offline(app)
    guild = bot.fake.default_guild
    alice = bot.member_id("alice")
    await bot.slash("ban", {"user": alice, "reason": "cool off", "duration": "1s"})
    reply = only(await bot.slash("ban", {"user": alice, "reason": "for good"}))
    assert reply == f"Case #2: <@{alice}> banned. Reason: for good"

    async def ran() -> bool:
        jobs = await app.services.get("jobs").list(type="moderation.unban")
        return [j.status.value for j in jobs] == ["completed"]

    await until(ran)
    [job] = await app.services.get("jobs").list(type="moderation.unban")
    assert job.result == {"skipped": "superseded by case #2"}
    assert guild.bans == {alice: "for good"}
    assert bot.fake.calls_to("DELETE", r"/bans/") == []


async def test_moderators_act_only_below_their_rank(wisp_project: Any, wisp_offline: Any) -> None:
    fake = FakeDiscord([offline_guild()])
    guild = fake.default_guild
    guild.roles += [
        FakeRole(id=501, name="mod", position=2),
        FakeRole(id=502, name="vip", position=3),
    ]
    bot = await wisp_offline(make_app(wisp_project), fake=fake)
    alice, bob = bot.member_id("alice"), bot.member_id("bob")
    await fake.member_update(alice, roles=[501])
    rule = {
        "capability": "moderation.*",
        "decision": "allow",
        "scope": "user",
        "target": str(alice),
    }
    await bot.slash("policy set", rule)

    reply = only(await bot.slash("warn", {"user": bob, "reason": "x"}, user=alice))
    assert reply == f"Case #1: <@{bob}> warned. Reason: x"  # bob holds no role
    await fake.member_update(bob, roles=[502])

    async def seen() -> bool:  # the bot's member cache takes it from the gateway
        member = bot.service.bot.get_guild(guild.id).get_member(bob)
        return bool(member.top_role.id == 502)

    await until(seen)
    reply = only(await bot.slash("kick", {"user": bob, "reason": "x"}, user=alice))
    assert reply == f"You cannot kick <@{bob}>: their highest role is not below yours. (ephemeral)"
    reply = only(await bot.slash("ban", {"user": guild.owner_id, "reason": "x"}, user=alice))
    assert reply == f"You cannot ban <@{guild.owner_id}>: they own this server. (ephemeral)"
    assert guild.get_member(bob) is not None
    # The owner outranks everyone.
    reply = only(await bot.slash("kick", {"user": bob, "reason": "x"}))
    assert reply == f"Case #2: <@{bob}> kicked. Reason: x"
