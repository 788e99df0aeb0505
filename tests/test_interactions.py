"""The HTTP interactions endpoint (plugin ``interactions``), end to end.

Each test signs requests with a key pair made here, posts them to a real
aiohttp server on an ephemeral port, and lets the offline fake Discord record
what the bot did afterwards over REST (follow-ups, edits).  Slow handlers wait
on events the test sets, never on the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import discord
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import wisp
from wisp.plugins.discord.fake import FakeDiscord, patched_endpoints
from wisp.plugins.discord.offline import offline_guild
from wisp.plugins.interactions import enable
from wisp.plugins.interactions.api import (
    InteractionExpired,
    InteractionRef,
    created_at,
    followup,
    hand_off,
)
from wisp.plugins.interactions.discordpy import CHECKED_VERSIONS, check_internals
from wisp.plugins.interactions.server import InteractionsService

pytestmark = pytest.mark.needs_plugin("discord", "interactions")

RUNS: list[str] = []
RELEASE: asyncio.Event | None = None
JOB_DONE: asyncio.Event | None = None


@wisp.command(description="Answer at once.")
async def hello(ctx: wisp.WispContext, name: str = "world") -> str:
    RUNS.append(f"hello {name}")
    return f"hello {name}"


async def _colours(ctx: wisp.WispContext, typed: str) -> list[str]:
    RUNS.append(f"suggest {typed} via {ctx.invocation_type}")
    return [c for c in ("green", "grey", "red") if c.startswith(typed)]


@wisp.command(
    name="paint",
    params=[wisp.Param("colour", wisp.ParamType.STRING, "A colour", autocomplete=_colours)],
)
async def paint(ctx: wisp.WispContext, colour: str) -> str:
    return f"painted {colour}"


@wisp.command(description="Answer once the test says so.")
async def slow(ctx: wisp.WispContext) -> str:
    assert RELEASE is not None
    await RELEASE.wait()
    RUNS.append("slow")
    return "done at last"


class Counter(discord.ui.View):
    """A button whose clicks discord.py's view store dispatches (gateway or HTTP alike)."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="+1", custom_id="counter:add")
    async def add(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        RUNS.append("click")
        await interaction.response.edit_message(content="clicked")


@wisp.command(description="Post a button.")
async def counter(ctx: wisp.WispContext) -> wisp.Response:
    return wisp.Response(content="press it", view=Counter())


@wisp.command(description="Whisper, once the test says so.")
async def whisper(ctx: wisp.WispContext) -> wisp.Response:
    assert RELEASE is not None
    await RELEASE.wait()
    return wisp.Response("only you", ephemeral=True)


@wisp.command(description="Hand the work to a durable job.")
async def report(ctx: wisp.WispContext, topic: str) -> None:
    await hand_off(ctx, "test.report", {"topic": topic})


@wisp.job("test.report")
async def report_job(ctx: wisp.WispContext, payload: Any) -> None:
    RUNS.append(f"job {payload['payload']['topic']}")
    await followup(ctx, payload["interaction"], f"report on {payload['payload']['topic']}")
    assert JOB_DONE is not None
    JOB_DONE.set()


@pytest.fixture(autouse=True)
def _reset() -> None:
    global RELEASE, JOB_DONE
    RUNS.clear()
    RELEASE = asyncio.Event()
    JOB_DONE = asyncio.Event()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def signer(key: Ed25519PrivateKey) -> Callable[[bytes], str]:
    return lambda message: key.sign(message).hex()


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    discord_fake = FakeDiscord([offline_guild()])
    await discord_fake.start()
    with patched_endpoints(discord_fake):
        yield discord_fake
    await discord_fake.stop()


Starter = Callable[..., Any]


@pytest.fixture
async def serve(wisp_project: Any, key: Ed25519PrivateKey) -> AsyncIterator[Starter]:
    """``await serve(extra_toml, plugins, root=...)``: a started app serving the endpoint."""
    started: list[wisp.Wisp] = []

    async def start(
        extra: str = "",
        plugins: tuple[str, ...] = (),
        root: str = "app",
        discord_defer: float = 0.3,
        endpoint_defer: float = 0.3,
    ) -> InteractionsService:
        wisp_project.write(
            f"{root}/wisp.toml",
            f'[interactions]\npublic_key = "{public_hex(key)}"\ndefer_after = {endpoint_defer}\n'
            f"[discord]\ndefer_after = {discord_defer}\n{extra}",
        )
        app = wisp.Wisp(
            rootdir=wisp_project.root / root,
            autoload=False,
            env={},
            plugins=["discord", "interactions", *plugins, __name__],
        )
        service = enable(app, offline=True, port=0)
        started.append(app)
        await app.start()
        return service

    yield start
    for app in reversed(started):
        with contextlib.suppress(Exception):
            await app.stop()


# -- the discord.py contract ------------------------------------------------------------


def test_discord_py_internals_are_the_checked_ones() -> None:
    """Fails loudly on a discord.py upgrade that moves what discordpy.py relies on."""
    import discord

    check_internals()
    assert discord.__version__ in CHECKED_VERSIONS, (
        f"discord.py {discord.__version__} is not among the versions "
        f"wisp/plugins/interactions/discordpy.py was checked against {CHECKED_VERSIONS}: "
        "read it against the new release, then add the version"
    )


# -- signatures -------------------------------------------------------------------------


async def test_ping_is_answered_with_pong(
    fake: FakeDiscord, serve: Starter, key: Ed25519PrivateKey
) -> None:
    service = await serve()
    status, body = await fake.post_interaction(
        service.url, {"id": "1", "type": 1, "application_id": "1", "token": "t"}, signer(key)
    )
    assert (status, body) == (200, {"type": 1})


async def test_bad_missing_and_stale_signatures_get_401(
    fake: FakeDiscord, serve: Starter, key: Ed25519PrivateKey
) -> None:
    service = await serve()
    ping = {"id": "1", "type": 1, "application_id": "1", "token": "t"}
    other = Ed25519PrivateKey.generate()
    assert (await fake.post_interaction(service.url, ping, signer(other)))[0] == 401
    assert (await fake.post_interaction(service.url, ping, None))[0] == 401
    stale = int(time.time()) - 3600
    assert (await fake.post_interaction(service.url, ping, signer(key), timestamp=stale))[0] == 401
    garbage = {"X-Signature-Ed25519": "zz", "X-Signature-Timestamp": "now"}
    assert (await fake.post_interaction(service.url, ping, None, headers=garbage))[0] == 401
    # A signature over another body does not carry over.
    interaction = await fake.interaction_create("hello", {"name": "x"}, gateway=False)
    stolen = signer(key)(b"0" + b"{}")
    status, _ = await fake.post_interaction(
        service.url, interaction, lambda message: stolen, timestamp=0
    )
    assert status == 401
    assert RUNS == []
    assert service.counts["refused"] == 5


async def test_a_signed_body_that_is_not_an_interaction_gets_400(
    fake: FakeDiscord, serve: Starter, key: Ed25519PrivateKey
) -> None:
    service = await serve()
    for body in ([1, 2], {"type": "x"}, {"type": 2, "id": "5"}):
        status, answer = await fake.post_interaction(service.url, body, signer(key))  # type: ignore[arg-type]
        assert status == 400, body
        assert "interaction" in answer["error"]


def test_a_public_key_that_is_not_one_is_refused(wisp_project: Any) -> None:
    wisp_project.write("wisp.toml", '[interactions]\npublic_key = "abc"\n')
    app = wisp_project.app(plugins=["discord", "interactions"])
    with pytest.raises(wisp.ConfigError, match="public_key"):
        app.configure()


# -- dispatch ---------------------------------------------------------------------------


async def test_a_slash_command_is_answered_inline(
    fake: FakeDiscord, serve: Starter, key: Ed25519PrivateKey
) -> None:
    service = await serve()
    interaction = await fake.interaction_create("hello", {"name": "http"}, gateway=False)
    status, body = await fake.post_interaction(service.url, interaction, signer(key))
    assert status == 200
    assert body["type"] == 4
    assert body["data"]["content"] == "hello http"
    assert RUNS == ["hello http"]
    assert fake.interactions[interaction.id].response_type == 4
    # Nothing went over REST: the answer was the HTTP response.
    assert [c.path for c in fake.interaction_responses(interaction.id)] == [
        f"/interactions/{interaction.id}/{interaction.token}/callback"
    ]


async def test_autocomplete_is_answered_inline(
    fake: FakeDiscord, serve: Starter, key: Ed25519PrivateKey
) -> None:
    service = await serve()
    typing = await fake.autocomplete("paint", {"colour": "gr"}, "colour", gateway=False)
    status, body = await fake.post_interaction(service.url, typing, signer(key))
    assert status == 200
    assert body == {
        "type": 8,
        "data": {
            "choices": [{"name": "green", "value": "green"}, {"name": "grey", "value": "grey"}]
        },
    }
    assert RUNS == ["suggest gr via slash"]


@pytest.mark.parametrize("deferred_by", ["discord", "endpoint"])
async def test_a_slow_command_is_deferred_then_followed_up(
    fake: FakeDiscord, serve: Starter, key: Ed25519PrivateKey, deferred_by: str
) -> None:
    """The discord service defers (then follows up), or, when it would be too late,
    the endpoint does (then the late answer edits the original response)."""
    # The other side's timer well behind, so a loaded machine cannot swap the two.
    if deferred_by == "discord":
        service = await serve(discord_defer=0.3, endpoint_defer=2.0)
    else:
        service = await serve(discord_defer=60)
    interaction = await fake.interaction_create("slow", gateway=False)
    mark = fake.mark()
    status, body = await fake.post_interaction(service.url, interaction, signer(key))
    assert (status, body["type"]) == (200, 5)
    assert fake.interactions[interaction.id].response_type == 5
    assert RUNS == []  # answered before the handler finished
    assert RELEASE is not None
    RELEASE.set()
    call = await fake.wait_for_call(
        lambda c: c.status == 200,
        path=rf"/webhooks/\d+/{interaction.token}(/messages/@original)?",
        since=mark,
    )
    assert call.json["content"] == "done at last"
    edited = call.path.endswith("/messages/@original")
    assert edited == (deferred_by == "endpoint")
    original = fake.messages[fake.interactions[interaction.id].original_message_id or 0]
    assert original["content"] == "done at last"
    assert RUNS == ["slow"]


async def test_a_private_answer_after_the_endpoint_deferred_stays_private(
    fake: FakeDiscord, serve: Starter, key: Ed25519PrivateKey
) -> None:
    service = await serve(discord_defer=60)  # only the endpoint defers, publicly
    interaction = await fake.interaction_create("whisper", gateway=False)
    mark = fake.mark()
    status, body = await fake.post_interaction(service.url, interaction, signer(key))
    assert (status, body) == (200, {"type": 5})
    placeholder = fake.interactions[interaction.id].original_message_id
    assert RELEASE is not None
    RELEASE.set()
    call = await fake.wait_for_call(
        lambda c: c.status == 200, method="POST", path=rf"/webhooks/\d+/{interaction.token}",
        since=mark,
    )  # fmt: skip
    assert call.json["content"] == "only you"
    assert int(call.json["flags"]) & 64
    assert placeholder not in fake.messages  # the public "thinking..." is gone
    assert fake.calls_to("PATCH", rf"/webhooks/\d+/{interaction.token}/messages/@original") == []


async def test_a_button_click_runs_its_view_and_updates_the_message(
    fake: FakeDiscord, serve: Starter, key: Ed25519PrivateKey
) -> None:
    service = await serve()
    command = await fake.interaction_create("counter", gateway=False)
    status, body = await fake.post_interaction(service.url, command, signer(key))
    assert (status, body["type"]) == (200, 4)
    assert body["data"]["components"][0]["components"][0]["custom_id"] == "counter:add"
    message_id = fake.interactions[command.id].original_message_id
    assert message_id is not None
    click = await fake.component_interaction(message_id, "counter:add", gateway=False)
    status, body = await fake.post_interaction(service.url, click, signer(key))
    assert (status, body["type"], body["data"]["content"]) == (200, 7, "clicked")
    assert fake.messages[message_id]["content"] == "clicked"
    assert RUNS == ["click"]


async def test_a_component_click_nobody_answers_is_deferred_as_an_update(
    fake: FakeDiscord, serve: Starter, key: Ed25519PrivateKey
) -> None:
    service = await serve()
    channel = fake.default_guild.first_text_channel().id
    message_id = await fake.message_create(channel_id=channel, content="a button")
    click = await fake.component_interaction(message_id, "nobody:listens", gateway=False)
    status, body = await fake.post_interaction(service.url, click, signer(key))
    assert (status, body) == (200, {"type": 6})


@pytest.mark.needs_plugin("storage", "jobs")
async def test_a_command_handed_to_a_job_follows_up(
    fake: FakeDiscord, serve: Starter, key: Ed25519PrivateKey
) -> None:
    service = await serve(
        "[jobs]\nembedded_worker = true\npoll_seconds = 0.05\n", plugins=("storage", "jobs")
    )
    interaction = await fake.interaction_create("report", {"topic": "uptime"}, gateway=False)
    status, body = await fake.post_interaction(service.url, interaction, signer(key))
    assert (status, body["type"]) == (200, 5)
    assert JOB_DONE is not None
    await asyncio.wait_for(JOB_DONE.wait(), 10)
    [job] = await service.app.services.get("jobs").list(type="test.report")
    ref = InteractionRef.from_json(job.payload["interaction"])
    assert ref.token == interaction.token
    assert ref.expires_at == created_at(interaction.id) + 15 * 60
    assert created_at(interaction.id) == pytest.approx(time.time(), abs=60)
    original = fake.messages[fake.interactions[interaction.id].original_message_id or 0]
    assert original["content"] == "report on uptime"
    assert RUNS == ["job uptime"]


async def test_followups_after_the_token_expired_are_refused(
    fake: FakeDiscord, serve: Starter, key: Ed25519PrivateKey
) -> None:
    service = await serve()
    interaction = await fake.interaction_create("slow", gateway=False)
    await fake.post_interaction(service.url, interaction, signer(key))
    ref = InteractionRef(
        application_id=fake.application_id,
        interaction_id=interaction.id,
        token=interaction.token,
        expires_at=time.time() - 1,
    )
    mark = fake.mark()
    with pytest.raises(InteractionExpired, match="token expired"):
        await followup(service.app, ref, "too late")
    assert fake.calls[mark:] == []  # refused before any request
    fresh = InteractionRef.of(_Stub(fake.application_id, interaction.id, interaction.token))
    with pytest.raises(InteractionExpired):
        fresh.check(now=fresh.expires_at)
    fresh.check(now=fresh.expires_at - 1)
    assert RELEASE is not None
    RELEASE.set()


class _Stub:
    def __init__(self, application_id: int, interaction_id: int, token: str) -> None:
        self.application_id = application_id
        self.id = interaction_id
        self.token = token


# -- duplicates -------------------------------------------------------------------------


async def test_a_duplicate_on_one_replica_runs_once_without_idempotency(
    fake: FakeDiscord, serve: Starter, key: Ed25519PrivateKey
) -> None:
    service = await serve()
    interaction = await fake.interaction_create("hello", {"name": "once"}, gateway=False)
    first = await fake.post_interaction(service.url, interaction, signer(key))
    second = await fake.post_interaction(service.url, interaction, signer(key))
    assert first[0] == 200
    assert second[0] == 409
    assert RUNS == ["hello once"]


@pytest.mark.needs_plugin("storage", "idempotency")
async def test_a_duplicate_across_two_replicas_runs_once(
    fake: FakeDiscord,
    serve: Starter,
    key: Ed25519PrivateKey,
    database: tuple[str, str],
) -> None:
    url, schema = database
    storage = f'[storage]\nurl = "{url}"\nauto_migrate = true\n' + (
        f'schema = "{schema}"\n' if schema else ""
    )
    one = await serve(storage, plugins=("storage", "idempotency"), root="one")
    two = await serve(storage, plugins=("storage", "idempotency"), root="two")
    interaction = await fake.interaction_create("hello", {"name": "replicas"}, gateway=False)
    answers = await asyncio.gather(
        fake.post_interaction(one.url, interaction, signer(key)),
        fake.post_interaction(two.url, interaction, signer(key)),
    )
    assert sorted(status for status, _ in answers) == [200, 409]
    assert RUNS == ["hello replicas"]
    assert one.deduper.shared and two.deduper.shared
    # A later redelivery is refused by both, the replica that ran it included.
    for replica in (one, two):
        assert (await fake.post_interaction(replica.url, interaction, signer(key)))[0] == 409
    assert RUNS == ["hello replicas"]


# -- the command line -------------------------------------------------------------------


def test_serve_interactions_names_what_is_missing(wisp_project: Any, wisp_exe: str) -> None:
    import os
    import subprocess

    wisp_project.write(
        "wisp.toml", '[wisp]\nautoload = false\nplugins = ["discord", "interactions"]\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WISP_", "DISCORD_"))}
    done = subprocess.run(
        [wisp_exe, "serve-interactions", "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=wisp_project.root,
        env=env,
    )
    assert done.returncode == 2
    assert "[interactions] public_key or DISCORD_PUBLIC_KEY" in done.stderr
    assert "[discord] token or DISCORD_TOKEN" in done.stderr
    assert "--port 70000 is not a port" in done.stderr


@pytest.mark.needs_plugin("redis", "idempotency")
async def test_a_duplicate_across_two_replicas_runs_once_on_redis(
    fake: FakeDiscord, serve: Starter, key: Ed25519PrivateKey, redis_url: str
) -> None:
    import uuid

    url = redis_url
    prefix = f"test:interactions:{uuid.uuid4().hex}:"
    config = (
        f'[redis]\nurl = "{url}"\n[idempotency]\nbackend = "redis"\nredis_prefix = "{prefix}"\n'
    )
    one = await serve(config, plugins=("redis", "idempotency"), root="one")
    two = await serve(config, plugins=("redis", "idempotency"), root="two")
    try:
        interaction = await fake.interaction_create("hello", {"name": "redis"}, gateway=False)
        answers = await asyncio.gather(
            fake.post_interaction(one.url, interaction, signer(key)),
            fake.post_interaction(two.url, interaction, signer(key)),
        )
        assert sorted(status for status, _ in answers) == [200, 409]
        assert RUNS == ["hello redis"]
        # A retry after the first answered (Discord redelivering) finds the claim
        # on either replica: it is kept for the token's life, not released on success.
        for replica in (two, one):
            status, _ = await fake.post_interaction(replica.url, interaction, signer(key))
            assert status == 409
        assert RUNS == ["hello redis"]
        assert one.counts.get("duplicate", 0) + two.counts.get("duplicate", 0) == 3
        client = one.app.services.get("redis").client
        [claim] = [k async for k in client.scan_iter(match=prefix + "*")]
        assert str(interaction.id) in (claim.decode() if isinstance(claim, bytes) else claim)
        assert 0 < await client.ttl(claim) <= 15 * 60
    finally:
        client = one.app.services.get("redis").client
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
