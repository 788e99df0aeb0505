"""The offline fake Discord, driven by the real discord.py client."""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest

with warnings.catch_warnings():
    # discord.player imports audioop, deprecated since Python 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    import discord
    from discord import app_commands
    from discord.ext import commands

from wisp.plugins.discord.fake import (
    DEFAULT_BOT_ID,
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    DEFAULT_OWNER_ID,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeRole,
    FakeUser,
    guild_id_for_shard,
    patched_endpoints,
)

pytestmark = pytest.mark.needs_plugin("discord")

TIMEOUT = 10.0
# How long discord.py waits for more GUILD_CREATEs before READY (default 2s).
GUILD_READY = 0.2
ALICE = FakeUser(id=DEFAULT_OWNER_ID + 100, username="alice")


def intents(**extra: bool) -> discord.Intents:
    value = discord.Intents.default()
    value.message_content = True
    for name, flag in extra.items():
        setattr(value, name, flag)
    return value


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        with patched_endpoints(server):
            yield server
        assert server.errors == []


@contextlib.asynccontextmanager
async def running(client: discord.Client, token: str = "any-token") -> AsyncIterator[Any]:
    """Start ``client`` against the fake, wait for READY, close it afterwards."""
    async with client:
        task = asyncio.create_task(client.start(token))
        ready = asyncio.create_task(client.wait_until_ready())
        try:
            done, _ = await asyncio.wait(
                {task, ready}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
            if task in done:
                task.result()  # start() failed: raise its error
            if ready not in done:
                raise TimeoutError("client did not become ready")
            yield client
        finally:
            ready.cancel()
            await client.close()
            async with asyncio.timeout(TIMEOUT):
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def test_login_ready_and_guild_cache(fake: FakeDiscord) -> None:
    client = discord.Client(intents=intents(), guild_ready_timeout=GUILD_READY)
    async with running(client):
        assert client.user is not None and client.user.id == DEFAULT_BOT_ID
        assert client.application_id == DEFAULT_BOT_ID
        guild = client.get_guild(DEFAULT_GUILD_ID)
        assert guild is not None and not guild.unavailable
        assert guild.me is not None and guild.me.id == DEFAULT_BOT_ID
        assert guild.owner_id == DEFAULT_OWNER_ID
        assert guild.default_role.id == DEFAULT_GUILD_ID
        channel = guild.get_channel(DEFAULT_CHANNEL_ID)
        assert isinstance(channel, discord.TextChannel) and channel.name == "general"
        assert client.latency >= 0

    paths = [(c.method, c.path) for c in fake.calls]
    assert ("GET", "/users/@me") in paths
    assert ("GET", "/oauth2/applications/@me") in paths
    assert [e.name for e in fake.events[:2]] == ["READY", "GUILD_CREATE"]
    ready = fake.events[0].data
    assert ready["guilds"] == [{"id": str(DEFAULT_GUILD_ID), "unavailable": True}]
    assert ready["resume_gateway_url"] == fake.gateway_url
    # discord.py asks for zlib-stream; the fake answers compressed frames.
    assert fake.gateway_connections[0]["compress"] in ("zlib-stream", "zstd-stream")
    identify = next(p for p in fake.received if p["op"] == 2)
    assert identify["d"]["token"] == "<token>"
    assert identify["d"]["intents"] == intents().value


async def test_uncompressed_gateway() -> None:
    async with FakeDiscord(zlib_stream=False) as fake:
        with patched_endpoints(fake):
            client = discord.Client(intents=intents(), guild_ready_timeout=GUILD_READY)
            async with running(client):
                assert client.get_guild(DEFAULT_GUILD_ID) is not None


async def test_message_create_and_reply(fake: FakeDiscord) -> None:
    bot = commands.Bot(command_prefix="!", intents=intents(), guild_ready_timeout=GUILD_READY)

    @bot.command()
    async def echo(ctx: commands.Context[commands.Bot], *, text: str) -> None:
        await ctx.reply(f"you said {text}")

    seen: list[discord.Message] = []

    @bot.listen()
    async def on_message(message: discord.Message) -> None:
        seen.append(message)

    async with running(bot):
        mark = fake.mark()
        message_id = await fake.message_create(content="!echo hello world")
        sent = await fake.wait_for_message(DEFAULT_CHANNEL_ID, since=mark, timeout=TIMEOUT)
        call = fake.calls_to("POST", rf"/channels/{DEFAULT_CHANNEL_ID}/messages")[-1]
        assert call.json["content"] == "you said hello world"
        assert int(call.json["message_reference"]["message_id"]) == message_id
        assert sent["content"] == "you said hello world"
        assert sent["type"] == 19 and sent["author"]["id"] == str(DEFAULT_BOT_ID)
        assert [m["content"] for m in fake.messages_sent(DEFAULT_CHANNEL_ID)] == [
            "you said hello world"
        ]
        # The bot's own message comes back over the gateway, like on Discord.
        async with asyncio.timeout(TIMEOUT):
            while len(seen) < 2:
                await asyncio.sleep(0.01)
        assert seen[0].id == message_id and seen[0].author.id == DEFAULT_OWNER_ID
        assert seen[0].guild is not None and seen[0].guild.id == DEFAULT_GUILD_ID
        assert seen[1].author.id == DEFAULT_BOT_ID


async def test_message_content_needs_intent(fake: FakeDiscord) -> None:
    client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=GUILD_READY)
    received: asyncio.Queue[discord.Message] = asyncio.Queue()
    client.event(_queue_handler("on_message", received))
    async with running(client):
        await fake.message_create(content="secret")
        await fake.message_create(content=f"<@{DEFAULT_BOT_ID}> hi")
        async with asyncio.timeout(TIMEOUT):
            first, second = await received.get(), await received.get()
        assert first.content == ""
        assert second.content == f"<@{DEFAULT_BOT_ID}> hi"
        assert client.user in second.mentions


def _queue_handler(name: str, queue: asyncio.Queue[Any]) -> Any:
    async def handler(*args: Any) -> None:
        queue.put_nowait(args[0] if len(args) == 1 else args)

    handler.__name__ = name
    return handler


async def test_rest_edits_reactions_and_deletes(fake: FakeDiscord) -> None:
    client = discord.Client(intents=intents(), guild_ready_timeout=GUILD_READY)
    async with running(client):
        channel = client.get_channel(DEFAULT_CHANNEL_ID)
        assert isinstance(channel, discord.TextChannel)
        async with asyncio.timeout(TIMEOUT):
            message = await channel.send("first", file=discord.File(_bytes(b"data"), "a.txt"))
            assert message.attachments[0].filename == "a.txt"
            assert await message.attachments[0].read() == b"data"
            await message.add_reaction("👍")
            edited = await message.edit(content="second")
            assert edited.content == "second" and edited.edited_at is not None
            fetched = await channel.fetch_message(message.id)
            assert fetched.content == "second" and fetched.reactions[0].me
            history = [m.id async for m in channel.history(limit=10)]
            assert history == [message.id]
            await message.remove_reaction("👍", client.user)  # type: ignore[arg-type]
            await message.delete()
            with pytest.raises(discord.NotFound):
                await channel.fetch_message(message.id)
            with pytest.raises(discord.HTTPException) as excinfo:
                await channel.send("x" * 2001)
            assert excinfo.value.code == 50035
    upload = fake.calls_to("POST", rf"/channels/{DEFAULT_CHANNEL_ID}/messages")[0]
    assert upload.json["content"] == "first"
    assert upload.files[0].filename == "a.txt" and upload.files[0].data == b"data"
    assert fake.calls_to("PUT", r"/channels/\d+/messages/\d+/reactions/👍/@me")
    assert fake.messages_sent() == []


def _bytes(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


async def test_gateway_events_reach_the_client(fake: FakeDiscord) -> None:
    client = discord.Client(intents=intents(members=True), guild_ready_timeout=GUILD_READY)
    events: asyncio.Queue[Any] = asyncio.Queue()
    for name in (
        "on_raw_reaction_add",
        "on_raw_reaction_remove",
        "on_raw_message_edit",
        "on_raw_message_delete",
        "on_member_join",
        "on_member_update",
        "on_member_remove",
        "on_guild_join",
        "on_guild_update",
        "on_guild_remove",
    ):
        client.event(_queue_handler(name, events))

    async def next_event() -> Any:
        async with asyncio.timeout(TIMEOUT):
            return await events.get()

    async with running(client):
        guild = client.get_guild(DEFAULT_GUILD_ID)
        assert guild is not None and guild.get_member(DEFAULT_OWNER_ID) is not None
        assert guild.chunked
        async with asyncio.timeout(TIMEOUT):
            found = await guild.query_members("own")
        assert [m.id for m in found] == [DEFAULT_OWNER_ID]
        assert fake.events[-1].name == "GUILD_MEMBERS_CHUNK"

        message_id = await fake.message_create(content="hello")
        await fake.reaction_add(message_id, "👍")
        raw = await next_event()
        assert isinstance(raw, discord.RawReactionActionEvent)
        assert raw.message_id == message_id and str(raw.emoji) == "👍"
        assert raw.member is not None and raw.member.id == DEFAULT_OWNER_ID
        await fake.reaction_remove(message_id, "👍")
        assert (await next_event()).event_type == "REACTION_REMOVE"
        await fake.message_edit(message_id, "edited")
        edit = await next_event()
        assert isinstance(edit, discord.RawMessageUpdateEvent) and edit.message.content == "edited"
        await fake.message_delete(message_id)
        assert (await next_event()).message_id == message_id

        member = await fake.member_join(ALICE)
        joined = await next_event()
        assert isinstance(joined, discord.Member) and joined.id == ALICE.id
        await fake.member_update(ALICE.id, nick="Al")
        before, after = await next_event()
        assert before.nick is None and after.nick == "Al"
        assert member.nick == "Al"
        await fake.member_remove(ALICE.id)
        assert (await next_event()).id == ALICE.id

        new_guild = FakeGuild(id=DEFAULT_GUILD_ID + 1000, name="Second", owner_id=ALICE.id)
        new_guild.members[0].user = ALICE
        await fake.guild_join(new_guild)
        joined_guild = await next_event()
        assert isinstance(joined_guild, discord.Guild) and joined_guild.name == "Second"
        assert joined_guild.me is not None
        await fake.guild_update(new_guild.id, name="Renamed")
        _, updated = await next_event()
        assert updated.name == "Renamed"
        await fake.guild_remove(new_guild.id)
        assert (await next_event()).id == new_guild.id
        assert client.get_guild(new_guild.id) is None


async def test_sync_and_slash_command(fake: FakeDiscord) -> None:
    guild_object = discord.Object(id=DEFAULT_GUILD_ID)

    class Bot(commands.Bot):
        async def setup_hook(self) -> None:
            self.tree.copy_global_to(guild=guild_object)
            await self.tree.sync()
            await self.tree.sync(guild=guild_object)

    bot = Bot(command_prefix="!", intents=intents(), guild_ready_timeout=GUILD_READY)
    invocations: list[tuple[str, int, discord.abc.User]] = []

    @bot.tree.command(description="Greet someone")
    @app_commands.describe(word="what to say")
    async def greet(
        interaction: discord.Interaction, word: str, times: int, who: discord.Member
    ) -> None:
        invocations.append((word, times, who))
        await interaction.response.send_message(f"{word} x{times}", ephemeral=True)
        await interaction.followup.send("and a followup")

    async def fruit_complete(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = ["apple", "apricot", "banana"]
        return [app_commands.Choice(name=n, value=n) for n in names if n.startswith(current)]

    @bot.tree.command(description="Pick a fruit")
    @app_commands.autocomplete(fruit=fruit_complete)
    async def pick(interaction: discord.Interaction, fruit: str) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.followup.send(f"picked {fruit}")
        await interaction.edit_original_response(content=f"picked {fruit}!")

    async with running(bot):
        put = fake.calls_to("PUT", rf"/applications/{DEFAULT_BOT_ID}/commands")
        assert len(put) == 1
        assert sorted(c["name"] for c in put[0].json) == ["greet", "pick"]
        greet_payload = next(c for c in put[0].json if c["name"] == "greet")
        assert [(o["name"], o["type"], o["required"]) for o in greet_payload["options"]] == [
            ("word", 3, True),
            ("times", 4, True),
            ("who", 6, True),
        ]
        assert all(c["id"] and c["version"] for c in put[0].response)
        guild_put = fake.calls_to(
            "PUT", rf"/applications/{DEFAULT_BOT_ID}/guilds/{DEFAULT_GUILD_ID}/commands"
        )
        assert len(guild_put) == 1
        assert {c["name"] for c in fake.guild_commands[DEFAULT_GUILD_ID]} == {"greet", "pick"}
        assert {c["guild_id"] for c in fake.guild_commands[DEFAULT_GUILD_ID]} == {
            str(DEFAULT_GUILD_ID)
        }

        owner = fake.default_guild.get_member(DEFAULT_OWNER_ID)
        assert owner is not None
        interaction = await fake.interaction_create(
            "greet", {"word": "hi", "times": 3, "who": owner.user}
        )
        assert interaction.payload["data"]["guild_id"] == str(DEFAULT_GUILD_ID)
        callback = await fake.wait_for_interaction_response(interaction.id, timeout=TIMEOUT)
        assert callback.query["with_response"] in ("1", "true")
        assert callback.json["type"] == 4
        assert callback.json["data"]["content"] == "hi x3"
        assert callback.json["data"]["flags"] == 64
        assert callback.response["interaction"]["response_message_ephemeral"] is True
        followup = await fake.wait_for_call(
            method="POST", path=rf"/webhooks/{DEFAULT_BOT_ID}/{interaction.token}", timeout=TIMEOUT
        )
        assert followup.json["content"] == "and a followup"
        assert followup.query["wait"] in ("1", "true")
        assert [c.path.split("/")[1] for c in fake.interaction_responses(interaction.id)] == [
            "interactions",
            "webhooks",
        ]
        word, times, who = invocations[0]
        assert (word, times) == ("hi", 3)
        assert isinstance(who, discord.Member) and who.id == DEFAULT_OWNER_ID
        assert interaction.ephemeral

        completion = await fake.autocomplete("pick", {"fruit": "ap"}, focused="fruit")
        answer = await fake.wait_for_interaction_response(completion.id, timeout=TIMEOUT)
        assert answer.json["type"] == 8
        assert [c["value"] for c in answer.json["data"]["choices"]] == ["apple", "apricot"]

        picked = await fake.interaction_create("pick", {"fruit": "banana"})
        edit = await fake.wait_for_call(
            method="PATCH",
            path=rf"/webhooks/{DEFAULT_BOT_ID}/{picked.token}/messages/@original",
            timeout=TIMEOUT,
        )
        assert edit.json["content"] == "picked banana!"
        responses = fake.interaction_responses(picked.id)
        assert responses[0].json["type"] == 5
        # The first followup after a defer replaces the "thinking" message.
        assert responses[1].response["id"] == str(picked.original_message_id)
        original = fake.messages[picked.original_message_id or 0]
        assert original["content"] == "picked banana!" and original["flags"] == 0
        assert original["interaction_metadata"]["id"] == str(picked.id)


async def test_interaction_errors_and_subcommands(fake: FakeDiscord) -> None:
    bot = commands.Bot(command_prefix="!", intents=intents(), guild_ready_timeout=GUILD_READY)
    group = app_commands.Group(name="tag", description="Tags")
    results: asyncio.Queue[Any] = asyncio.Queue()

    @group.command(description="Make a tag")
    async def create(
        interaction: discord.Interaction, name: str, role: discord.Role, where: discord.TextChannel
    ) -> None:
        await interaction.response.send_message(f"{name} {role.name} {where.name}")
        try:
            await interaction.response.send_message("again")
        except discord.InteractionResponded as exc:
            results.put_nowait(exc)
        try:
            await interaction.followup.send("")
        except discord.HTTPException as exc:
            results.put_nowait(exc)

    bot.tree.add_command(group)
    guild = fake.default_guild
    mods = FakeRole(id=DEFAULT_GUILD_ID + 50, name="mods", permissions=8)
    guild.roles.append(mods)
    async with running(bot):
        await bot.tree.sync()
        channel = guild.get_channel(DEFAULT_CHANNEL_ID)
        assert channel is not None
        interaction = await fake.interaction_create(
            "tag create", {"name": "x", "role": mods, "where": channel}
        )
        data = interaction.payload["data"]
        assert data["options"][0]["type"] == 1 and data["options"][0]["name"] == "create"
        assert data["resolved"]["roles"][str(mods.id)]["name"] == "mods"
        callback = await fake.wait_for_interaction_response(interaction.id, timeout=TIMEOUT)
        assert callback.json["data"]["content"] == "x mods general"
        async with asyncio.timeout(TIMEOUT):
            first, second = await results.get(), await results.get()
        assert isinstance(first, discord.InteractionResponded)
        assert isinstance(second, discord.HTTPException) and second.code == 50006
        # Not ephemeral: the response is also a MESSAGE_CREATE in the channel.
        assert fake.messages_sent(DEFAULT_CHANNEL_ID)[0]["content"] == "x mods general"


async def test_auto_sharded_client_gets_only_its_shards() -> None:
    guilds = [
        FakeGuild(id=guild_id_for_shard(shard, 4, n), name=f"g{shard}-{n}")
        for shard in range(4)
        for n in range(2)
    ]

    class Sharded(discord.AutoShardedClient):
        async def before_identify_hook(
            self, shard_id: int | None, *, initial: bool = False
        ) -> None:
            return None  # the default sleeps 5s between IDENTIFYs

    async with FakeDiscord(guilds) as fake:
        with patched_endpoints(fake):
            client = Sharded(
                intents=intents(), shard_count=4, shard_ids=[0, 1], guild_ready_timeout=GUILD_READY
            )
            async with running(client):
                assert sorted(client.shards) == [0, 1]
                mine = {g.id for g in guilds if (g.id >> 22) % 4 in (0, 1)}
                assert {g.id for g in client.guilds} == mine and len(mine) == 4
                for guild in client.guilds:
                    assert guild.me is not None
                    assert guild.shard_id == (guild.id >> 22) % 4
                identifies = [p["d"]["shard"] for p in fake.received if p["op"] == 2]
                assert sorted(identifies) == [[0, 4], [1, 4]]
                ready_shards = sorted(e.data["shard"][0] for e in fake.events if e.name == "READY")
                assert ready_shards == [0, 1]
                for event in fake.events:
                    if event.name == "GUILD_CREATE":
                        (shard,) = event.shard_ids
                        assert (int(event.data["id"]) >> 22) % 4 == shard

                other = next(g for g in guilds if (g.id >> 22) % 4 == 2)
                assert await fake.message_create(other.id) and not fake.events[-1].shard_ids
                received: asyncio.Queue[discord.Message] = asyncio.Queue()
                client.event(_queue_handler("on_message", received))
                target = next(g for g in guilds if (g.id >> 22) % 4 == 1)
                await fake.message_create(target.id, content="to shard 1")
                assert fake.events[-1].shard_ids == (1,)
                async with asyncio.timeout(TIMEOUT):
                    message = await received.get()
                assert message.guild is not None and message.guild.id == target.id
            assert fake.errors == []


async def test_reconnect_resumes_and_replays(fake: FakeDiscord) -> None:
    client = discord.Client(intents=intents(), guild_ready_timeout=GUILD_READY)
    received: asyncio.Queue[discord.Message] = asyncio.Queue()
    client.event(_queue_handler("on_message", received))
    resumed = asyncio.Event()

    @client.event
    async def on_resumed() -> None:
        resumed.set()

    async with running(client):
        assert await fake.request_reconnect() == 1
        # Sent while the client is reconnecting: buffered, then replayed on RESUME.
        await fake.message_create(content="while away")
        async with asyncio.timeout(TIMEOUT):
            await resumed.wait()
            message = await received.get()
        assert message.content == "while away"
        assert [p["op"] for p in fake.received if p["op"] in (2, 6)] == [2, 6]
        await fake.message_create(content="after")
        async with asyncio.timeout(TIMEOUT):
            assert (await received.get()).content == "after"


async def test_direct_messages(fake: FakeDiscord) -> None:
    client = commands.Bot(
        command_prefix="!", intents=intents(members=True), guild_ready_timeout=GUILD_READY
    )
    received: asyncio.Queue[discord.Message] = asyncio.Queue()
    client.event(_queue_handler("on_message", received))
    async with running(client):
        await fake.message_create(author=DEFAULT_OWNER_ID, content="psst", dm=True)
        async with asyncio.timeout(TIMEOUT):
            message = await received.get()
            assert message.guild is None and message.content == "psst"
            assert isinstance(message.channel, discord.DMChannel)
            await message.channel.send("hi back")
            owner = client.get_user(DEFAULT_OWNER_ID)
            assert owner is not None
            await owner.send("second")
        dm_channel = fake.dm_channel_id(DEFAULT_OWNER_ID)
        assert [m["content"] for m in fake.messages_sent(dm_channel)] == ["hi back", "second"]

        @client.tree.command(description="Ping")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message(f"pong {interaction.guild_id}")

        interaction = await fake.interaction_create("ping", dm=True, user=DEFAULT_OWNER_ID)
        callback = await fake.wait_for_interaction_response(interaction.id, timeout=TIMEOUT)
        assert callback.json["data"]["content"] == "pong None"


async def test_buttons(fake: FakeDiscord) -> None:
    client = discord.Client(intents=intents(), guild_ready_timeout=GUILD_READY)
    clicked: asyncio.Queue[str] = asyncio.Queue()

    class Counter(discord.ui.View):
        @discord.ui.button(label="+1", custom_id="plus")
        async def plus(
            self, interaction: discord.Interaction, button: discord.ui.Button[Any]
        ) -> None:
            clicked.put_nowait(button.custom_id or "")
            await interaction.response.edit_message(content="clicked")

    async with running(client):
        channel = client.get_channel(DEFAULT_CHANNEL_ID)
        assert isinstance(channel, discord.TextChannel)
        async with asyncio.timeout(TIMEOUT):
            message = await channel.send("press", view=Counter(timeout=None))
        stored = fake.messages[message.id]
        assert stored["components"][0]["components"][0]["custom_id"] == "plus"
        interaction = await fake.component_interaction(message.id, "plus")
        callback = await fake.wait_for_interaction_response(interaction.id, timeout=TIMEOUT)
        assert callback.json["type"] == 7
        async with asyncio.timeout(TIMEOUT):
            assert await clicked.get() == "plus"
        assert fake.messages[message.id]["content"] == "clicked"


async def test_wrong_token_is_rejected() -> None:
    async with FakeDiscord(required_token="right") as fake:
        with patched_endpoints(fake):
            client = discord.Client(intents=intents())
            with pytest.raises(discord.LoginFailure):
                async with running(client, token="wrong"):
                    pass
            assert fake.calls[0].status == 401


async def test_wait_for_call_times_out(fake: FakeDiscord) -> None:
    with pytest.raises(TimeoutError, match="no matching REST call"):
        await fake.wait_for_call(method="POST", path="/nothing", timeout=0.05)


async def test_fixtures_and_payloads() -> None:
    guild = FakeGuild()
    assert [c.name for c in guild.channels] == ["general"]
    assert guild.channels[0].id == DEFAULT_CHANNEL_ID
    assert guild.roles[0].id == guild.id
    fake = FakeDiscord([guild])
    payload = fake.guild_payload(guild)
    assert {m["user"]["id"] for m in payload["members"]} == {
        str(DEFAULT_OWNER_ID),
        str(DEFAULT_BOT_ID),
    }
    assert payload["member_count"] == 2
    extra = FakeChannel(id=guild.id + 7, name="voice", type=2)
    guild.channels.append(extra)
    assert fake.guild_payload(guild)["channels"][1]["bitrate"] == 64000
    for shard in range(3):
        assert (guild_id_for_shard(shard, 3, 5) >> 22) % 3 == shard
    with pytest.raises(RuntimeError):
        _ = fake.api_base
