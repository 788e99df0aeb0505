"""The Discord plugin through the real discord.py stack, against the offline fake."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

import wisp
from wisp.plugins.discord.appcommands import commands_payload
from wisp.plugins.discord.fake import (
    FakeDiscord,
    FakeGuild,
    FakeMember,
    FakeUser,
    guild_id_for_shard,
)
from wisp.plugins.discord.offline import offline_guild

pytestmark = pytest.mark.needs_plugin("discord")

ROOT = Path(__file__).resolve().parents[1]
SEEN: list[str] = []


async def _colours(ctx, current: str):
    return [c for c in ("red", "green", "blue", "grey") if c.startswith(current)]


@wisp.command(description="Roll a die.")
async def roll(ctx, sides: int = 6) -> str:
    if sides < 2:
        raise wisp.UserError("A die needs at least 2 sides.")
    return f"rolled d{sides} for {ctx.user_id} in {ctx.guild_id} via {ctx.invocation_type}"


@wisp.command(description="Whisper.")
async def secret(ctx) -> wisp.Response:
    return wisp.Response("only you can see this", ephemeral=True)


@wisp.command(
    name="config colour pick",
    params=[wisp.Param("colour", wisp.ParamType.STRING, "A colour", autocomplete=_colours)],
)
async def colour_pick(ctx, colour: str) -> str:
    return f"picked {colour}"


@wisp.command()
async def crash(ctx) -> str:
    raise RuntimeError("database on fire")


@wisp.event_handler("message", priority=10)
async def first(ctx, message: Any) -> None:
    SEEN.append(f"first:{message.content}")


@wisp.event_handler("message", priority=20)
async def broken(ctx, message: Any) -> None:
    raise RuntimeError("handler bug")


@wisp.event_handler("message", priority=30, allow_dms=True)
async def last(ctx, message: Any) -> None:
    SEEN.append(f"last:{message.content}")


@wisp.event_handler("member_join")
async def welcome(ctx, member: Any) -> None:
    SEEN.append(f"join:{member.name}")


@wisp.event_handler("reaction_add")
async def reacted(ctx, reaction: Any, user: Any) -> None:
    SEEN.append(f"reaction:{reaction.emoji}:{user.name}")


@wisp.event_handler("message", priority=40, essential=True)
async def essential(ctx, message: Any) -> None:
    SEEN.append(f"essential:{message.content}")


class Features:
    @wisp.hookimpl
    def wisp_commands(self):
        return [roll, secret, colour_pick, crash]

    @wisp.hookimpl
    def wisp_event_handlers(self):
        return [first, broken, last, welcome, reacted, essential]


@pytest.fixture(autouse=True)
def _clear() -> None:
    SEEN.clear()


def make_app(wisp_project, toml: str = "", plugins=("discord",)) -> wisp.Wisp:
    wisp_project.write("wisp.toml", "[discord]\nloop_threshold = 50\n" + toml)
    app = wisp_project.app(plugins=list(plugins))
    app.register(Features(), "demo")
    return app


async def test_slash_commands_with_options_ephemeral_and_errors(wisp_project, wisp_offline):
    bot = await wisp_offline(make_app(wisp_project))
    [put] = bot.fake.calls_to("PUT", r"/applications/\d+/commands")
    assert put.json == commands_payload(bot.app.commands.values())

    owner = bot.fake.default_guild.owner_id
    answer = await bot.slash("roll", {"sides": 20})
    assert answer.replies == [f"rolled d20 for {owner} in {bot.fake.default_guild.id} via slash"]
    [interaction] = list(bot.fake.interactions.values())
    assert interaction.response_type == 4 and not interaction.ephemeral

    answer = await bot.slash("secret")
    assert answer.replies == ["only you can see this (ephemeral)"]
    answer = await bot.slash("roll", {"sides": 1})
    assert answer.replies == ["A die needs at least 2 sides. (ephemeral)"]
    answer = await bot.slash("crash")
    [reply] = answer.replies
    assert "database on fire" not in reply and answer.outcomes[0].request_id in reply
    assert answer.failed  # an internal error, as the script runner reports it


async def test_subcommand_groups_and_autocomplete(wisp_project, wisp_offline):
    bot = await wisp_offline(make_app(wisp_project))
    answer = await bot.slash("config colour pick", {"colour": "red"})
    assert answer.replies == ["picked red"]
    interaction = await bot.fake.autocomplete("config colour pick", {"colour": "gr"}, "colour")
    call = await bot.fake.wait_for_interaction_response(interaction.id)
    assert call.json == {
        "type": 8,
        "data": {
            "choices": [{"name": "green", "value": "green"}, {"name": "grey", "value": "grey"}]
        },
    }


async def test_prefix_commands_and_message_events(wisp_project, wisp_offline, caplog):
    bot = await wisp_offline(make_app(wisp_project))
    answer = await bot.say("!roll 8")
    assert answer.replies[0].startswith("rolled d8 for") and answer.replies[0].endswith("prefix")
    answer = await bot.say("!roll sides=9 extra")
    assert answer.replies == ["`roll` takes no more arguments (got `extra`)."]
    assert SEEN == []  # command messages are commands, not chatter

    answer = await bot.say("hello")
    # priority order; the broken handler in between does not stop the last one
    assert SEEN == ["first:hello", "last:hello", "essential:hello"]
    # every handler's outcome is reported; the broken one's is an internal error
    kinds = [type(o.error).__name__ if o.error else "ok" for o in answer.outcomes]
    assert kinds == ["ok", "RuntimeError", "ok", "ok"]
    assert answer.failed

    SEEN.clear()
    await bot.say("from another bot", user=bot.fake.bot.id)  # the bot itself: ignored
    assert SEEN == []


async def test_bots_dms_members_and_reactions(wisp_project, wisp_offline):
    fake = FakeDiscord([offline_guild()])
    robot = FakeUser(id=fake.default_guild.owner_id + 50, username="robot", bot=True)
    fake.default_guild.members.append(FakeMember(robot))
    bot = await wisp_offline(make_app(wisp_project), fake=fake)
    await bot.say("beep", user=robot.id)
    assert SEEN == []  # ignore_bots is the default
    await bot.fake.member_join(FakeUser(id=robot.id + 1, username="newbie"))
    await _until(lambda: "join:newbie" in SEEN)
    message_id = await bot.fake.message_create(content="react to me")
    await bot.service.wait_handled(message_id)
    SEEN.clear()
    await bot.fake.reaction_add(message_id, "👍")
    await _until(lambda: any(s.startswith("reaction:") for s in SEEN))
    assert SEEN == ["reaction:👍:owner"]
    SEEN.clear()
    dm_id = await bot.fake.message_create(content="psst", dm=True)
    await bot.service.wait_handled(dm_id)
    assert SEEN == ["last:psst"]  # only the handler that allows DMs


@pytest.mark.needs_plugin("storage")
async def test_per_guild_disable_through_plugin_state(wisp_project, wisp_offline):
    app = make_app(wisp_project, plugins=("discord", "storage"))
    bot = await wisp_offline(app)
    guild = bot.fake.default_guild.id
    await app.services.get("plugin_state").set_enabled("demo", guild, False)
    await bot.say("quiet please")
    assert SEEN == []
    await app.services.get("plugin_state").set_enabled("demo", guild, True)
    await bot.say("loud again")
    assert SEEN == ["first:loud again", "last:loud again", "essential:loud again"]


async def test_a_burst_of_identical_messages_puts_the_guild_in_safe_mode(
    wisp_project, wisp_offline, log_lines
):
    wisp_project.write("wisp.toml", "[discord]\nloop_threshold = 3\nloop_window = 60\n")
    app = wisp_project.app(plugins=["discord"])
    app.register(Features(), "demo")
    bot = await wisp_offline(app)
    for _ in range(3):
        await bot.say("spam")
    assert SEEN.count("first:spam") == 2  # the third identical one is dropped
    assert any("safe mode" in r["message"] and "loop suspected" in r["message"] for r in log_lines)
    SEEN.clear()
    await bot.say("something else")
    assert SEEN == ["essential:something else"]  # safe mode: essential handlers only


async def test_commands_sync_only_when_they_change(wisp_project, wisp_offline):
    bot = await wisp_offline(make_app(wisp_project))
    service = bot.service
    service.offline = False  # use the hash file, as against real Discord
    assert await service.sync() is True
    assert await service.sync() is False
    assert await service.sync(force=True) is True
    marker = next((wisp_project.root / ".wisp").glob("discord-commands-*-global"))
    assert len(marker.read_text().strip()) == 64
    puts = bot.fake.calls_to("PUT", r"/applications/\d+/commands")
    assert len(puts) == 3  # the start-up sync, the first and the forced one
    assert await service.sync(guild_id=bot.fake.default_guild.id) is True
    assert bot.fake.calls_to(
        "PUT",
        rf"/applications/\d+/guilds/{bot.fake.default_guild.id}"
        r"/commands",
    )


async def test_auto_sharded_bot_runs_two_shards_of_four(wisp_project, wisp_offline):
    guilds = [FakeGuild(id=guild_id_for_shard(s, 4), name=f"shard {s}") for s in range(4)]
    fake = FakeDiscord(guilds)
    app = make_app(wisp_project, "shard_count = 4\nshard_ids = [0, 1]\n")
    bot = await wisp_offline(app, fake=fake)
    discord_bot = bot.service.bot
    from discord.ext import commands

    assert isinstance(discord_bot, commands.AutoShardedBot)
    assert sorted(discord_bot.shards) == [0, 1]
    assert sorted(g.name for g in discord_bot.guilds) == ["shard 0", "shard 1"]
    answer = await bot.slash("roll", {"sides": 4}, guild_id=guilds[1].id)
    assert answer.replies and "d4" in answer.replies[0]


def test_bad_discord_config_names_the_key(wisp_project):
    wisp_project.write("wisp.toml", '[discord]\nintents = ["guilds", "telepathy"]\n')
    with pytest.raises(wisp.ConfigError, match=r"discord.intents: unknown intent\(s\) telepathy"):
        wisp_project.app(plugins=["discord"]).configure()
    wisp_project.write("wisp.toml", "[discord]\nshard_ids = [5]\nshard_count = 2\n")
    with pytest.raises(wisp.ConfigError, match=r"shard_ids \[5\] are not below shard_count 2"):
        wisp_project.app(plugins=["discord"]).configure()


@pytest.mark.slow
def test_offline_script_prints_a_transcript(tmp_path):
    """The README's main job: the example bot, offline, replaying its script."""
    import shutil
    import sys

    example = tmp_path / "hello"
    shutil.copytree(
        ROOT / "examples" / "hello", example, ignore=shutil.ignore_patterns("*.sqlite3*", ".wisp")
    )
    wisp_exe = Path(sys.executable).parent / "wisp"
    done = subprocess.run(
        [str(wisp_exe), "run", "--offline", "--script", "script.txt"],
        cwd=example,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for line in [
        "> /roll sides=20",
        "> /roll sides=1",
        "bot: A die needs between 2 and 100 sides. (ephemeral)",
        "> !roll 12",
        "> hello there",
        "bot: Hello, owner!",
        "bot: Only the bot's admins can do that. (ephemeral)",
    ]:
        assert line in out, out
    (example / "bad.txt").write_text("/ping\n/nope\n")
    done = subprocess.run(
        [str(wisp_exe), "run", "--offline", "--script", "bad.txt"],
        cwd=example,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "!! no command 'nope'" in done.stdout and "bot: Pong!" in done.stdout


async def _until(check, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


ROUTED: list[tuple[str, str]] = []


def _recorder(event: str, describe):
    @wisp.event_handler(event)
    async def handler(ctx, **payload: Any) -> None:
        assert ctx.invocation_type == "event"
        ROUTED.append((event, describe(**payload)))

    return handler


EVERY_EVENT = [
    _recorder("message_edit", lambda before, after: f"{before.content}->{after.content}"),
    _recorder("message_delete", lambda message: message.content),
    _recorder("member_remove", lambda member: member.name),
    _recorder("member_update", lambda before, after: f"{before.nick}->{after.nick}"),
    _recorder("reaction_remove", lambda reaction, user: f"{reaction.emoji}:{user.name}"),
    _recorder("guild_join", lambda guild: guild.name),
    _recorder("guild_update", lambda before, after: f"{before.name}->{after.name}"),
    _recorder("guild_remove", lambda guild: guild.name),
]


async def test_every_routed_event_reaches_its_handler(wisp_project, wisp_offline):
    class Events:
        @wisp.hookimpl
        def wisp_event_handlers(self):
            return EVERY_EVENT

    ROUTED.clear()
    wisp_project.write(
        "wisp.toml",
        "[discord]\nintents = "
        + repr(
            ["guilds", "members", "guild_messages", "guild_reactions", "message_content"]
        ).replace("'", '"')
        + "\n",
    )
    app = wisp_project.app(plugins=["discord"])
    app.register(Events(), "events")
    bot = await wisp_offline(app)
    fake = bot.fake
    bob = next(m.user for m in fake.default_guild.members if m.user.username == "bob")
    message_id = await fake.message_create(content="first", author=bob)
    await bot.service.wait_handled(message_id)
    await fake.message_edit(message_id, "second")
    await fake.reaction_add(message_id, "🎉", user=bob)
    await fake.reaction_remove(message_id, "🎉", user=bob)
    await fake.message_delete(message_id)
    await fake.member_update(bob.id, nick="bobby")
    await fake.member_remove(bob.id)
    newcomer = FakeGuild(id=fake.default_guild.id + 1000, name="second guild")
    # discord.py updates its guild object in place: let each handler run first.
    await fake.guild_join(newcomer)
    await _until(lambda: ("guild_join", "second guild") in ROUTED)
    await fake.guild_update(newcomer.id, name="renamed guild")
    await _until(lambda: any(e == "guild_update" for e, _ in ROUTED))
    await fake.guild_remove(newcomer.id)
    expected = [
        ("message_edit", "first->second"),
        ("reaction_remove", "🎉:bob"),
        ("message_delete", "second"),
        ("member_update", "None->bobby"),
        ("member_remove", "bob"),
        ("guild_join", "second guild"),
        ("guild_update", "second guild->renamed guild"),
        ("guild_remove", "renamed guild"),
    ]
    await _until(lambda: len(ROUTED) >= len(expected))
    assert sorted(ROUTED) == sorted(expected)


@pytest.mark.needs_plugin("basics")
async def test_commands_sync_cli_against_the_fake(wisp_project, monkeypatch):
    from wisp.cli.main import main
    from wisp.plugins.discord.fake import patched_endpoints

    wisp_project.write("wisp.toml", '[wisp]\nautoload = false\nplugins = ["discord", "basics"]\n')
    monkeypatch.chdir(wisp_project.root)
    assert await asyncio.to_thread(main, ["commands", "sync"]) == 2  # no token
    async with FakeDiscord(required_token="a-token") as fake:
        with patched_endpoints(fake):
            monkeypatch.setenv("DISCORD_TOKEN", "a-wrong-token")
            assert await asyncio.to_thread(main, ["commands", "sync"]) == 2
            monkeypatch.setenv("DISCORD_TOKEN", "a-token")
            guild = fake.default_guild.id
            assert await asyncio.to_thread(main, ["commands", "sync", "--guild", str(guild)]) == 0
    assert [c["name"] for c in fake.guild_commands[guild]] == ["help", "ping"]


@wisp.command(description="Show a card.")
async def card(ctx) -> wisp.Response:
    import discord

    return wisp.Response(embed=discord.Embed(title="Wisp", description="a card"))


async def test_embeds_pass_through_to_discord(wisp_project, wisp_offline):
    class Cards:
        @wisp.hookimpl
        def wisp_commands(self):
            return [card]

    wisp_project.write("wisp.toml", "")
    app = wisp_project.app(plugins=["discord"])
    app.register(Cards(), "cards")
    bot = await wisp_offline(app)
    answer = await bot.slash("card")
    assert answer.replies == [" [embed: Wisp]"]
    [call] = [c for c in bot.fake.calls if "/callback" in c.path]
    assert call.json["data"]["embeds"][0]["description"] == "a card"


@pytest.mark.slow
async def test_wisp_run_with_a_token_takes_the_same_path(wisp_project, monkeypatch):
    """`wisp run` online: the same service, pointed here at the fake instead of Discord."""
    import argparse
    import os
    import signal

    from wisp.plugins.discord import wisp_run
    from wisp.plugins.discord.fake import patched_endpoints

    app = make_app(wisp_project, 'token = "real-looking-token"\n')
    app.configure()
    async with FakeDiscord(required_token="real-looking-token") as fake:
        with patched_endpoints(fake):
            run = asyncio.create_task(wisp_run(app, argparse.Namespace(offline=False, script=None)))
            await _until(lambda: app.state.value == "started" or run.done(), timeout=15)
            if run.done():
                raise AssertionError(f"wisp run ended early: {run.result()!r}")
            interaction = await fake.interaction_create("roll", {"sides": 3})
            call = await fake.wait_for_interaction_response(interaction.id)
            assert call.json["data"]["content"].startswith("rolled d3")
            os.kill(os.getpid(), signal.SIGTERM)
            assert await asyncio.wait_for(run, 15) == 0
    assert app.state.value == "stopped"
    # offline-only sync skipping is off online: the hash marker was written
    assert list((wisp_project.root / ".wisp").glob("discord-commands-*-global"))


@wisp.command(description="Think, then answer privately.")
async def ponder(ctx) -> wisp.Response:
    await asyncio.sleep(0.3)
    return wisp.Response("a private thought", ephemeral=True)


@wisp.command(description="Think privately.", ephemeral=True)
async def brood(ctx) -> wisp.Response:
    await asyncio.sleep(0.3)
    return wisp.Response("kept to myself", ephemeral=True)


async def test_slow_private_answers_stay_private(wisp_project, wisp_offline):
    class Slow:
        @wisp.hookimpl
        def wisp_commands(self):
            return [ponder, brood]

    wisp_project.write("wisp.toml", "[discord]\ndefer_after = 0.05\n")
    app = wisp_project.app(plugins=["discord"])
    app.register(Slow(), "slow")
    bot = await wisp_offline(app)
    answer = await bot.slash("ponder")
    assert answer.replies[-1] == "a private thought (ephemeral)"
    calls = [c for c in bot.fake.calls if "/interactions/" in c.path or "/webhooks/" in c.path]
    assert [c.method for c in calls] == ["POST", "DELETE", "POST"]  # defer, drop it, followup
    assert calls[0].json["type"] == 5
    assert not int((calls[0].json.get("data") or {}).get("flags") or 0) & 64
    mark = bot.fake.mark()
    answer = await bot.slash("brood")
    [defer] = [c for c in bot.fake.calls[mark:] if "/callback" in c.path]
    assert int(defer.json["data"]["flags"]) & 64  # deferred privately from the start
    assert answer.replies[-1] == "kept to myself (ephemeral)"


async def test_different_reactions_are_not_a_loop(wisp_project, wisp_offline, log_lines):
    wisp_project.write("wisp.toml", "[discord]\nloop_threshold = 3\n")
    app = wisp_project.app(plugins=["discord"])
    app.register(Features(), "demo")
    bot = await wisp_offline(app)
    message_id = await bot.fake.message_create(content="pick your roles")
    await bot.service.wait_handled(message_id)
    SEEN.clear()
    for emoji in ("🍎", "🍐", "🍊", "🍋", "🍌"):
        await bot.fake.reaction_add(message_id, emoji)
    await _until(lambda: len(SEEN) == 5)
    assert not any("safe mode" in r["message"] for r in log_lines)


def test_min_and_max_only_on_numbers():
    with pytest.raises(ValueError, match="min_value and max_value apply to integer and number"):
        wisp.Param("code", wisp.ParamType.STRING, min_value=3)


@pytest.mark.needs_plugin("storage")
def test_the_bot_starts_after_storage(wisp_project):
    from wisp.plugins.discord import enable
    from wisp.plugins.discord.fake import DEFAULT_CHANNEL_ID, DEFAULT_GUILD_ID
    from wisp.plugins.discord.offline import ALICE, BOB

    assert {ALICE.id, BOB.id}.isdisjoint({DEFAULT_GUILD_ID, DEFAULT_CHANNEL_ID})
    app = wisp_project.app(plugins=["discord", "storage"]).configure()
    enable(app, offline=True)
    for plugin, result in app.pluginmanager.results("wisp_services", app=app):
        for service in result:
            app.services.add(service, plugin)
    order = app.services.start_order()
    assert order.index("discord") > order.index("plugin_state")
    assert order.index("discord") > order.index("migrations")


@wisp.command(description="Who is that?")
async def whois(ctx, who: int) -> str:
    return f"user {who}"


async def test_prefix_commands_take_mentions_and_apostrophes(wisp_project, wisp_offline):
    class Who:
        @wisp.hookimpl
        def wisp_commands(self):
            return [
                wisp.Command(
                    "whois", whois.handler, params=(wisp.Param("who", wisp.ParamType.USER),)
                )
            ]

    wisp_project.write("wisp.toml", "")
    app = wisp_project.app(plugins=["discord"])
    app.register(Who(), "who")
    bot = await wisp_offline(app)
    assert (await bot.say("!whois <@!42>")).replies == ["user 42"]
    assert (await bot.say("!whois don't")).replies == [
        'Option `who` must be a user id, not "don\'t".'
    ]


def test_options_have_one_type():
    async def handler(ctx, x: int | str) -> str:
        return ""

    with pytest.raises(TypeError, match=r"parameter 'x' is int \| str; an option has one type"):
        wisp.command()(handler)


class _ShardTwo:
    """A plugin that shapes the bot through the discord plugin's client hooks."""

    def __init__(self) -> None:
        self.built: list[Any] = []

    @wisp.hookimpl
    def wisp_discord_client_options(self, app):
        return {"shard_count": 4, "shard_ids": [2]}

    @wisp.hookimpl
    def wisp_discord_client_created(self, app, client):
        self.built.append(client)


async def test_plugins_shape_the_discord_client_through_hooks(wisp_project, wisp_offline):
    guilds = [FakeGuild(id=guild_id_for_shard(s, 4), name=f"shard {s}") for s in range(4)]
    app = make_app(wisp_project)
    shaper = _ShardTwo()
    app.register(shaper, "shaper")
    bot = await wisp_offline(app, fake=FakeDiscord(guilds))
    assert shaper.built == [bot.service.bot]
    assert sorted(bot.service.bot.shards) == [2]
    assert [g.name for g in bot.service.bot.guilds] == ["shard 2"]


async def test_two_plugins_setting_one_client_option_is_an_error(wisp_project, wisp_offline):
    class Other:
        @wisp.hookimpl
        def wisp_discord_client_options(self, app):
            return {"shard_ids": [1]}

    app = make_app(wisp_project)
    app.register(_ShardTwo(), "shaper")
    app.register(Other(), "other")
    with pytest.raises(
        wisp.PluginError,
        match=r"plugins '(shaper|other)' and '(shaper|other)' both set the discord.py client "
        r"option 'shard_ids'; block one of them",
    ):
        await wisp_offline(app)


def test_discord_endpoints_are_where_wisp_points_them() -> None:
    """Contract with discord.py 2.7.1: REST and gateway addresses are these class
    attributes (wisp.plugins.discord.endpoints); an upgrade that moves them fails here."""
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    from wisp.plugins.discord.endpoints import DISCORD_API_URL, endpoints

    assert Route.BASE == DISCORD_API_URL
    assert isinstance(DiscordWebSocket.DEFAULT_GATEWAY, yarl.URL)
    with endpoints("http://proxy.test/api/v10/", "ws://gw.test/"):
        assert Route("GET", "/users/@me").url == "http://proxy.test/api/v10/users/@me"
        assert str(DiscordWebSocket.DEFAULT_GATEWAY) == "ws://gw.test/"
    assert Route.BASE == DISCORD_API_URL


async def test_online_bot_uses_the_configured_rest_and_gateway_urls(wisp_project):
    """A REST or gateway proxy in front of Discord: ``api_url`` and ``gateway_url``."""
    from discord.http import Route

    from wisp.plugins.discord import enable

    async with FakeDiscord() as fake:
        app = make_app(
            wisp_project,
            f'token = "any"\napi_url = "{fake.api_base}"\ngateway_url = "{fake.gateway_url}"\n',
        )
        app.configure()
        service = enable(app, offline=False)
        await app.start()
        try:
            assert service.bot is not None and service.bot.is_ready()
            assert fake.shards_connected == [0]
            assert fake.calls_to("GET", "/users/@me")
        finally:
            await app.stop()
    assert Route.BASE == "https://discord.com/api/v10"


async def test_a_bot_that_never_gets_ready_stops_after_ready_timeout(wisp_project):
    """A gateway (proxy) that accepts the connection and never says HELLO: start-up
    gives up after ``[discord] ready_timeout`` and says which key to raise."""
    from aiohttp import web

    from wisp.plugins.discord import enable

    accepted: list[web.WebSocketResponse] = []

    async def silent(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        accepted.append(ws)
        async for _ in ws:  # never answers
            pass
        return ws

    server = web.Application()
    server.router.add_get("/", silent)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with FakeDiscord() as fake:
            app = make_app(
                wisp_project,
                f'token = "any"\napi_url = "{fake.api_base}"\n'
                f'gateway_url = "ws://127.0.0.1:{port}/"\nready_timeout = 1.5\n',
            )
            app.configure()
            service = enable(app, offline=False)
            assert service.ready_timeout() == 1.5
            with pytest.raises(
                wisp.PluginError,
                match=r"service 'discord' \(plugin 'discord'\) failed to start: "
                r"ExternalServiceError: Discord did not get ready within 1.5s "
                r"\(raise \[discord\] ready_timeout",
            ):
                await app.start()
            assert accepted  # it did connect
    finally:
        await runner.cleanup()
    default = make_app(wisp_project, "shard_count = 4\nshard_ids = [1, 2]\n")
    default.configure()
    service = enable(default, offline=True)
    service.bot = service.build()
    assert service.ready_timeout() == 72.0  # 60 s and 6 s for each of its 2 shards


def test_bad_proxy_urls_name_the_key(wisp_project):
    wisp_project.write("wisp.toml", '[discord]\ngateway_url = "http://gw"\n')
    with pytest.raises(
        wisp.ConfigError, match=r"discord.gateway_url: 'http://gw' is not a ws or wss URL"
    ):
        wisp_project.app(plugins=["discord"]).configure()
