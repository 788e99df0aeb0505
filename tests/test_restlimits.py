"""The restlimits plugin: a REST limiter shared through Redis by every process on
one bot token, against the fake Discord's REST limits; REST-proxy 429s.

Needs ``WISP_TEST_REDIS_URL`` for the limiter (skipped only when unset; named
but unreachable fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest

import wisp
from wisp.plugins.discord.fake import (
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    RestLimits,
    patched_endpoints,
)
from wisp.plugins.discord.fakelimits import bucket_hash
from wisp.plugins.metrics.api import metrics_of
from wisp.plugins.restlimits.config import RestLimitsConfig
from wisp.plugins.restlimits.routes import route_of
from wisp.testing import WispProject

pytestmark = pytest.mark.needs_plugin("restlimits")

TOKEN = "restlimits-test-token"
#: Seconds the limiters in these tests keep between a window and the next.  The
#: fake times a request when its handler runs in this (xdist worker) process; on 2
#: shared cores a loop can stall for a few hundred ms and then admit a backlog at
#: once, which Discord would have seen spread out.  At 0.2 (four processes) and at
#: the default 0.1 (two apps, beside CI) loaded runs got global 429s.  ``margin`` is the knob
#: operators turn for jitter.
MARGIN = 0.5
CHANNELS = [DEFAULT_GUILD_ID + 100 + i for i in range(8)]


def _guild() -> FakeGuild:
    guild = FakeGuild()
    guild.channels.extend(FakeChannel(id=c, name=f"c{i}") for i, c in enumerate(CHANNELS))
    return guild


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[tuple[Any, str]]:
    """A Redis client and a key prefix of this test's own; its keys go at the end."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    prefix = f"wisp:test:rest:{uuid.uuid4().hex[:8]}:"
    try:
        yield client, prefix
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@contextlib.asynccontextmanager
async def _client(limiter: Any) -> AsyncIterator[discord.Client]:
    client = discord.Client(intents=discord.Intents.none(), http_trace=limiter.trace_config())
    await client.login(TOKEN)
    try:
        yield client
    finally:
        await client.close()


async def _send(client: discord.Client, channel_id: int, text: str) -> None:
    params = discord.http.handle_message_parameters(content=text)
    await client.http.send_message(channel_id, params=params)


def _limiter(client: Any, prefix: str, **config: Any) -> Any:
    from wisp.plugins.restlimits.discordpy import api_base
    from wisp.plugins.restlimits.limiter import SharedRestLimiter

    config.setdefault("margin", MARGIN)
    return SharedRestLimiter(client, RestLimitsConfig(prefix=prefix, **config), api_base)


# -- routes ---------------------------------------------------------------------------


def test_routes_keep_major_parameters_and_hide_tokens() -> None:
    assert route_of("post", "/channels/42/messages") == ("POST /channels/{id}/messages", "42", True)
    assert route_of("DELETE", "/channels/42/messages/7?x=1") == (
        "DELETE /channels/{id}/messages/{id}",
        "42",
        True,
    )
    assert route_of("PUT", "/channels/1/messages/2/reactions/%F0%9F%91%8D/@me").route == (
        "PUT /channels/{id}/messages/{id}/reactions/{emoji}/@me"
    )
    assert route_of("GET", "/guilds/9/members/5") == ("GET /guilds/{id}/members/{id}", "9", True)
    assert route_of("GET", "/users/@me") == ("GET /users/@me", "", True)
    hook = route_of("POST", "/webhooks/5/s3cret-token")
    assert hook.route == "POST /webhooks/{id}/{token}" and not hook.global_
    assert hook.major.startswith("5:") and "s3cret" not in hook.major
    callback = route_of("POST", "/interactions/8/tok/callback")
    assert callback.route == "POST /interactions/{id}/{token}/callback" and not callback.global_


# -- the fake's limits ----------------------------------------------------------------


async def test_the_fake_enforces_route_buckets_and_the_global_limit() -> None:
    import aiohttp

    auth = {"Authorization": f"Bot {TOKEN}"}
    limits = RestLimits(route_limit=2, route_window=30.0, global_per_second=4)
    async with FakeDiscord([_guild()], rest_limits=limits) as fake, aiohttp.ClientSession() as http:
        url = f"{fake.api_base}/channels/{CHANNELS[0]}"
        answers = []
        for _ in range(3):
            async with http.get(url, headers=auth) as response:
                answers.append((response.status, dict(response.headers), await response.json()))
        (s1, h1, _), (s2, h2, _), (s3, h3, b3) = answers
        assert (s1, s2, s3) == (200, 200, 429)
        assert h1["X-RateLimit-Limit"] == "2" and h1["X-RateLimit-Remaining"] == "1"
        assert h2["X-RateLimit-Remaining"] == "0" and h1["Via"]
        assert h1["X-RateLimit-Bucket"] == bucket_hash("GET /channels/{channel}")
        assert 0 < float(h1["X-RateLimit-Reset-After"]) <= 30
        assert h3["X-RateLimit-Scope"] == "user" and h3["Via"] and int(h3["Retry-After"]) >= 1
        assert b3["global"] is False and 0 < b3["retry_after"] <= 30
        for channel in CHANNELS[1:3]:  # other buckets: 4 admitted in this second now
            async with http.get(f"{fake.api_base}/channels/{channel}", headers=auth) as response:
                assert response.status == 200
        async with http.get(f"{fake.api_base}/channels/{CHANNELS[4]}", headers=auth) as response:
            assert response.status == 429
            assert response.headers["X-RateLimit-Global"] == "true"
            assert response.headers["X-RateLimit-Scope"] == "global"
            assert (await response.json())["global"] is True
        async with http.post(f"{fake.api_base}/interactions/1/tok/callback", json={}) as response:
            assert response.status != 429  # exempt from the global limit
        assert fake.rest.rejected == {"user": 1, "global": 1}
        assert fake.rest.invalid_requests == 2
    async with (
        FakeDiscord() as plain,  # off by default
        aiohttp.ClientSession() as http,
        http.get(f"{plain.api_base}/users/@me", headers=auth) as response,
    ):
        assert response.status == 200
        assert "Via" not in response.headers and "X-RateLimit-Limit" not in response.headers


# -- the limiter against the fake -------------------------------------------------------


async def test_buckets_are_learned_and_a_burst_across_processes_waits(redis_prefix) -> None:
    """Two limiters (two processes' worth) on one token burst 24 messages into one
    channel whose bucket allows 3 per 0.3 s: all wait for their slot, none gets a 429."""
    redis, prefix = redis_prefix
    limits = RestLimits(route_limit=3, route_window=0.3)
    async with (
        FakeDiscord([_guild()], rest_limits=limits) as fake,
        contextlib.AsyncExitStack() as s,
    ):
        s.enter_context(patched_endpoints(fake))
        limiters = [_limiter(redis, prefix), _limiter(redis, prefix)]
        clients = [await s.enter_async_context(_client(lim)) for lim in limiters]
        await asyncio.gather(
            *(_send(c, CHANNELS[0], f"{n}-{i}") for n, c in enumerate(clients) for i in range(12))
        )
        for lim in limiters:
            await lim.drain()
        assert fake.rest.rejected == {}
        assert len(fake.calls_to("POST", rf"/channels/{CHANNELS[0]}/messages")) == 24
        assert sum(lim.stats.waits for lim in limiters) > 0
        # The route's bucket, as the fake named it, and its limit are in Redis.
        template, groups = fake.route_template("POST", f"/channels/{CHANNELS[0]}/messages")
        assert template == "POST /channels/{channel}/messages"
        assert groups["channel"] == str(CHANNELS[0])
        keys = limiters[0].keys_for(f"Bot {TOKEN}")
        routes = await redis.hgetall(keys.routes)
        learned = routes[b"POST /channels/{id}/messages"].decode()
        assert learned == bucket_hash(template)
        state = await redis.hgetall(f"{keys.buckets}{learned}:{CHANNELS[0]}")
        assert state[b"l"] == b"3" and state[b"u"] == b"0"
        # The token itself is nowhere in Redis.
        assert not [k async for k in redis.scan_iter(match=f"*{TOKEN}*")]


@pytest.mark.needs_plugin("discord", "redis", "metrics")
async def test_global_limit_is_shared_by_two_apps(redis_prefix, redis_url, tmp_path) -> None:
    """Two Wisp apps with the restlimits plugin, 10/s global between them: 40
    requests on 8 channels (route buckets never the limit), 0 global 429s."""
    from wisp.plugins.discord import enable

    _, prefix = redis_prefix
    limits = RestLimits(route_limit=100, route_window=1.0, global_per_second=10)
    async with FakeDiscord([_guild()], rest_limits=limits) as fake:
        apps = []
        for n in range(2):
            project = WispProject(tmp_path / f"app{n}")
            project.root.mkdir()
            project.write(
                "wisp.toml",
                f"""
                [discord]
                token = "{TOKEN}"
                api_url = "{fake.api_base}"
                gateway_url = "{fake.gateway_url}"
                [redis]
                url = "{redis_url}"
                [restlimits]
                prefix = "{prefix}"
                global_per_second = 10
                margin = {MARGIN}
                """,
            )
            app = project.app(plugins=["discord", "redis", "restlimits", "metrics"])
            app.configure()
            apps.append((app, enable(app, offline=False, gateway=False)))
        try:
            for app, _ in apps:
                await app.start()
            sent = [
                _send(service.bot, CHANNELS[i % 8], f"{n}-{i}")
                for n, (_, service) in enumerate(apps)
                for i in range(20)
                if service.bot is not None
            ]
            await asyncio.gather(*sent)
            for app, _ in apps:
                await app.services.get("restlimits").limiter.drain()
            assert fake.rest.rejected == {}
            assert len(fake.calls_to("POST", r"/channels/\d+/messages")) == 40
            waited = [app.services.get("restlimits").limiter.stats.waits for app, _ in apps]
            assert sum(waited) > 0
            for app, _ in apps:
                health = await app.services.get("restlimits").health()
                assert health.ok and "429s: none" in health.detail
                registry = metrics_of(app)
                assert registry is not None
                assert not [m for m in registry if m.name == "wisp.restlimits.429s"]
        finally:
            for app, _ in apps:
                await app.stop()


async def test_invalid_request_guard_backs_off_before_the_budget(redis_prefix, log_lines) -> None:
    """3 answers of 403 with the guard at 3: every process sharing the group holds
    its next request (and says so loudly) instead of spending the budget."""
    redis, prefix = redis_prefix
    async with (
        FakeDiscord([_guild()], rest_limits=RestLimits()) as fake,
        contextlib.AsyncExitStack() as s,
    ):
        s.enter_context(patched_endpoints(fake))
        config = {"invalid_backoff_at": 3, "invalid_limit": 10}
        first, second = _limiter(redis, prefix, **config), _limiter(redis, prefix, **config)
        client = await s.enter_async_context(_client(first))
        fake.rest.fail_next(3, status=403)
        for i in range(3):
            with pytest.raises(discord.Forbidden):
                await _send(client, DEFAULT_CHANNEL_ID, f"denied {i}")
        await first.drain()
        assert fake.rest.invalid_requests == 3
        assert first.stats.invalid_count == 3
        for limiter in (first, second):
            grant, wait, reason = await limiter.try_acquire(
                f"Bot {TOKEN}", "POST", f"/channels/{DEFAULT_CHANNEL_ID}/messages"
            )
            assert grant is None and reason == "invalid" and wait > 0
        # A group of its own (another egress IP) is not held.
        other = _limiter(redis, prefix, invalid_group="elsewhere", **config)
        grant, _, _ = await other.try_acquire(f"Bot {TOKEN}", "GET", "/users/@me")
        assert grant is not None
    errors = [r["message"] for r in log_lines if r["level"] == "ERROR"]
    assert any("3 invalid requests" in m and "holding every request" in m for m in errors)


async def test_a_global_429_blocks_every_process(redis_prefix) -> None:
    """A global 429 one process gets (from elsewhere: another bot on the token)
    holds the others until its Retry-After has passed."""
    redis, prefix = redis_prefix
    first, second = _limiter(redis, prefix), _limiter(redis, prefix)
    grant, _, _ = await first.try_acquire(f"Bot {TOKEN}", "GET", "/users/@me")
    assert grant is not None
    await first.record(grant, 429, {"X-RateLimit-Global": "true", "Retry-After": "2", "Via": "x"})
    grant, wait, reason = await second.try_acquire(f"Bot {TOKEN}", "GET", "/guilds/1")
    assert grant is None and reason == "global" and 0 < wait <= 2.0
    assert first.stats.rejected == {"global": 1}
    # Interaction callbacks are not bound by the global limit.
    grant, _, _ = await second.try_acquire(f"Bot {TOKEN}", "POST", "/interactions/1/t/callback")
    assert grant is not None


async def test_unknown_buckets_are_probed_one_request_at_a_time(redis_prefix) -> None:
    """The first request of an unknown bucket goes alone; a probe that failed lets
    the next one probe; a route without limit headers runs free; a route 429 holds
    the bucket."""
    redis, prefix = redis_prefix
    first, second = _limiter(redis, prefix), _limiter(redis, prefix)
    auth, path = f"Bot {TOKEN}", "/channels/5/messages"
    probe, _, _ = await first.try_acquire(auth, "POST", path)
    assert probe is not None
    held, wait, reason = await second.try_acquire(auth, "POST", path)
    assert held is None and reason == "route" and 0 < wait <= 0.025
    other, _, _ = await second.try_acquire(auth, "POST", "/channels/6/messages")
    assert other is not None  # another channel: another bucket
    await first.record(probe, 0, {})  # the probe failed without an answer
    probe, _, _ = await second.try_acquire(auth, "POST", path)
    assert probe is not None
    await second.record(probe, 200, {})  # no limit headers: no bucket
    for _ in range(5):
        grant, _, _ = await first.try_acquire(auth, "POST", path)
        assert grant is not None
    free, _, _ = await first.try_acquire(auth, "GET", "/guilds/7")
    assert free is not None
    headers = {
        "Via": "1.1 google",
        "X-RateLimit-Scope": "user",
        "X-RateLimit-Bucket": "abc",
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset-After": "3",
    }
    await first.record(free, 429, headers)
    held, wait, reason = await second.try_acquire(auth, "GET", "/guilds/7")
    assert held is None and reason == "route" and 0 < wait <= 3.0
    assert first.stats.rejected == {"user": 1}


# -- REST-proxy 429s ----------------------------------------------------------------------


def _proxy_app(project: WispProject, fake: FakeDiscord, toml: str = "") -> wisp.Wisp:
    project.write(
        "wisp.toml",
        f'[discord]\ntoken = "{TOKEN}"\napi_url = "{fake.api_base}"\n'
        f'gateway_url = "{fake.gateway_url}"\n{toml}',
    )
    app = project.app(plugins=["discord", "restlimits", "metrics"])
    app.configure()
    return app


@pytest.mark.needs_plugin("discord", "metrics")
async def test_a_proxy_429_is_retried_and_succeeds(wisp_project) -> None:
    from wisp.plugins.discord import enable

    async with FakeDiscord([_guild()]) as fake:
        app = _proxy_app(wisp_project, fake)
        service = enable(app, offline=False, gateway=False)
        await app.start()
        try:
            assert "restlimits" not in app.services  # no Redis: the limiter is off
            fake.rest.fail_next(2, retry_after=0.01)
            assert service.bot is not None
            await _send(service.bot, DEFAULT_CHANNEL_ID, "through the proxy")
            calls = fake.calls_to("POST", rf"/channels/{DEFAULT_CHANNEL_ID}/messages")
            assert [c.status for c in calls] == [429, 429, 200]
            registry = metrics_of(app)
            assert registry is not None and registry.value("wisp.restlimits.proxy_retries") == 2
            assert fake.rest.invalid_requests == 0  # never reached Discord
        finally:
            await app.stop()


@pytest.mark.needs_plugin("discord")
async def test_bans_and_endless_proxy_429s_are_not_retried_forever(wisp_project) -> None:
    from wisp.plugins.discord import enable

    async with FakeDiscord([_guild()]) as fake:
        app = _proxy_app(wisp_project, fake, "[restlimits]\nproxy_retries = 2\n")
        service = enable(app, offline=False, gateway=False)
        await app.start()
        try:
            assert service.bot is not None
            path = rf"/channels/{DEFAULT_CHANNEL_ID}/messages"
            fake.rest.fail_next(1, text=True)  # a Cloudflare ban page: never retried
            with pytest.raises(discord.HTTPException) as banned:
                await _send(service.bot, DEFAULT_CHANNEL_ID, "banned")
            assert banned.value.status == 429 and len(fake.calls_to("POST", path)) == 1
            fake.rest.fail_next(50, retry_after=0.01)  # a proxy that never lets go
            with pytest.raises(discord.HTTPException) as endless:
                await _send(service.bot, DEFAULT_CHANNEL_ID, "endless")
            assert endless.value.status == 429 and len(fake.calls_to("POST", path)) == 1 + 3
        finally:
            await app.stop()


@pytest.mark.needs_plugin("discord")
async def test_the_retry_can_be_turned_off(wisp_project) -> None:
    from wisp.plugins.discord import enable

    async with FakeDiscord([_guild()]) as fake:
        app = _proxy_app(wisp_project, fake, "[restlimits]\nproxy_retries = 0\n")
        service = enable(app, offline=False, gateway=False)
        await app.start()
        try:
            assert service.bot is not None
            fake.rest.fail_next(1, retry_after=0.01)
            with pytest.raises(discord.HTTPException):
                await _send(service.bot, DEFAULT_CHANNEL_ID, "no retry")
        finally:
            await app.stop()


# -- contract with discord.py ------------------------------------------------------------


async def test_discordpy_internals_the_plugin_uses() -> None:
    """Contract with discord.py (wisp.plugins.restlimits.discordpy): the internals are
    where they were, and discord.py still raises on a 429 without Via (else the
    proxy retry is no longer needed) while retrying one with Via itself."""
    from wisp.plugins.restlimits import discordpy

    assert discord.__version__ in discordpy.CHECKED_VERSIONS, (
        f"discord.py {discord.__version__} is not in CHECKED_VERSIONS: re-read "
        "wisp/plugins/restlimits/discordpy.py against it"
    )
    discordpy.check_internals()
    async with FakeDiscord([_guild()]) as fake:
        with patched_endpoints(fake):
            assert discordpy.api_base() == fake.api_base
            client = discord.Client(intents=discord.Intents.none())
            await client.login(TOKEN)
            try:
                fake.rest.fail_next(1, retry_after=0.01)
                with pytest.raises(discord.HTTPException) as raised:
                    await _send(client, DEFAULT_CHANNEL_ID, "no via")
                assert raised.value.status == 429
                assert await discordpy.proxy_retry_after(raised.value) == 0.01
                fake.rest.fail_next(1, retry_after=0.01, via=True)
                await _send(client, DEFAULT_CHANNEL_ID, "via")  # discord.py retries this one
            finally:
                await client.close()


# -- configuration -----------------------------------------------------------------------


async def test_enabled_without_redis_warns_and_is_off(wisp_project, log_lines) -> None:
    wisp_project.write("wisp.toml", "[restlimits]\nenabled = true\n")
    async with wisp_project.app(plugins=["restlimits", "redis"]) as app:
        assert "restlimits" not in app.services
    assert any("shared REST limits are off" in r["message"] for r in log_lines)
    log_lines.clear()
    async with wisp_project.app(plugins=["restlimits"]) as blocked:  # redis blocked
        assert "restlimits" not in blocked.services
    assert any("shared REST limits are off" in r["message"] for r in log_lines)
    log_lines.clear()
    wisp_project.write("wisp.toml", "")  # unset: off without a word when there is no Redis
    async with wisp_project.app(plugins=["restlimits", "redis"]) as quiet:
        assert "restlimits" not in quiet.services
    assert not any("shared REST limits are off" in r["message"] for r in log_lines)


def test_bad_config_names_the_key(wisp_project) -> None:
    wisp_project.write("wisp.toml", "[restlimits]\ninvalid_backoff_at = 20000\n")
    with pytest.raises(wisp.ConfigError, match=r"invalid_backoff_at \(20000\) must be below"):
        wisp_project.app(plugins=["restlimits"]).configure()
    wisp_project.write("wisp.toml", "[restlimits]\nglobal_per_second = 0\n")
    with pytest.raises(wisp.ConfigError, match=r"restlimits.global_per_second"):
        wisp_project.app(plugins=["restlimits"]).configure()


# -- four processes ----------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import discord
    import wisp
    from wisp.plugins.discord import enable

    async def main(root, count, channels):
        app = wisp.Wisp(rootdir=root, autoload=False, env={},
                        plugins=["discord", "redis", "restlimits"])
        app.configure()
        service = enable(app, offline=False, gateway=False)
        await app.start()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        http = service.bot.http
        async def one(i):
            params = discord.http.handle_message_parameters(content=str(i))
            await http.send_message(channels[i % len(channels)], params=params)
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        elapsed = time.perf_counter() - started
        limiter = app.services.get("restlimits").limiter
        await limiter.drain()
        stats = {"elapsed": elapsed, "rejected": limiter.stats.rejected}
        await app.stop()
        print(json.dumps(stats), flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), [int(c) for c in sys.argv[3].split(",")]))
    """
)


@pytest.mark.slow  # four processes under load: the matrix's crowded workers skew it
@pytest.mark.needs_plugin("discord", "redis")
async def test_four_processes_on_one_token_stay_under_the_limits(
    redis_prefix, redis_url, tmp_path
) -> None:
    """4 processes x 50 messages on 8 channels of 5 per 0.5 s, 50/s global: 0 global
    429s and under 1% route 429s."""
    _, prefix = redis_prefix
    limits = RestLimits(route_limit=5, route_window=0.5, global_per_second=50)
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    async with FakeDiscord([_guild()], rest_limits=limits) as fake:
        root = tmp_path / "proj"
        root.mkdir()
        (root / "wisp.toml").write_text(
            f'[discord]\ntoken = "{TOKEN}"\napi_url = "{fake.api_base}"\n'
            f'[redis]\nurl = "{redis_url}"\n[restlimits]\nprefix = "{prefix}"\n'
            f"margin = {MARGIN}\n",
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("WISP_")}
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                str(script),
                str(root),
                "50",
                ",".join(map(str, CHANNELS)),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            for _ in range(4)
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 60)
                assert line.strip() == b"ready", line
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
                await proc.stdin.drain()
            results = []
            for proc in procs:
                out, _ = await asyncio.wait_for(proc.communicate(), 120)
                assert proc.returncode == 0
                results.append(json.loads(out.decode().strip().splitlines()[-1]))
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        sent = fake.calls_to("POST", r"/channels/\d+/messages")
        assert len([c for c in sent if c.status == 200]) == 200
        assert fake.rest.rejected.get("global", 0) == 0
        assert fake.rest.rejected.get("user", 0) < 0.01 * len(sent)
        assert all(not r["rejected"].get("global") for r in results)
