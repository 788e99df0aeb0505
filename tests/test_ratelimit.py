"""Rate limits: parsing, GCRA in memory and in Redis, the middleware, concurrency."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid

import pytest

import wisp
from wisp.cli.main import main
from wisp.plugins.ratelimit.limits import Limit, LimitError, parse_limit
from wisp.plugins.ratelimit.memory import MemoryBackend

pytestmark = pytest.mark.needs_plugin("ratelimit")


@pytest.mark.parametrize(
    ("spec", "limit"),
    [
        ("5/10s", Limit(5, 10.0, "user")),
        ("5/10s per guild", Limit(5, 10.0, "guild")),
        ("1/m per channel", Limit(1, 60.0, "channel")),
        ("100/2h per command", Limit(100, 7200.0, "command")),
        ("3/day per member", Limit(3, 86400.0, "member")),
        (" 2 / 0.5s per global ", Limit(2, 0.5, "global")),
    ],
)
def test_limits_parse(spec, limit) -> None:
    assert parse_limit(spec) == limit


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0/10s", "at least 1"),
        ("-1/10s", "at least 1"),
        ("5/0s", "longer than 0"),
        ("5/10 fortnights", "unknown unit 'fortnights'"),
        ("5/10s per planet", "unknown key"),
        ("five per minute", "is not a limit"),
    ],
)
def test_bad_limits_say_why(spec, message) -> None:
    with pytest.raises(LimitError, match=message):
        parse_limit(spec)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("now", [8191.611, 222.706, 1988.412, 262129.763, 52.889])
async def test_memory_gcra_first_call_is_allowed_whatever_the_clock_reads(now) -> None:
    """At these clock readings ``now + 60 - 60 > now`` in floating point: a fresh
    ``1/60s`` bucket refused its first call ("try again in 0.0s")."""
    clock = Clock()
    clock.now = now
    backend = MemoryBackend(clock=clock)
    one = Limit(1, 60.0)
    assert await backend.hit([("single", one)]) == 0.0
    assert await backend.hit([("x", one), ("y", Limit(2, 60.0))]) == 0.0
    assert await backend.hit([("single", one)]) == pytest.approx(60.0)


async def test_memory_gcra_burst_refill_and_all_or_nothing() -> None:
    clock = Clock()
    backend = MemoryBackend(max_keys=3, clock=clock)
    limit = Limit(3, 9.0)  # a burst of 3, then one every 3s
    assert [await backend.hit([("a", limit)]) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await backend.hit([("a", limit)]) == pytest.approx(3.0)
    clock.now += 1.0
    assert await backend.hit([("a", limit)]) == pytest.approx(2.0)  # accurate retry_after
    clock.now += 2.0
    assert await backend.hit([("a", limit)]) == 0.0
    # several buckets: a rejection takes no token from the one that had room
    wide = Limit(10, 10.0)
    assert await backend.hit([("a", limit), ("b", wide)]) > 0
    assert len(backend._tat) == 1  # "b" was never charged
    for name in "bcde":
        await backend.hit([(name, wide)])
    assert len(backend._tat) == 3  # bounded: least recently used went first


def app_with(project, commands, toml: str = "", plugins=("ratelimit",)) -> wisp.Wisp:
    project.write("wisp.toml", toml)
    app = project.app(plugins=list(plugins))

    class P:
        @wisp.hookimpl
        def wisp_commands(self):
            return commands

    app.register(P(), "p")
    return app


@wisp.command(rate_limit=["2/60s per user", "3/60s per guild"])
async def wave(ctx) -> str:
    return "wave"


async def test_middleware_limits_per_user_and_guild(project) -> None:
    app = app_with(project, [wave])
    async with app:
        call = lambda user, guild=1: app.call("wave", guild_id=guild, user_id=user)  # noqa: E731
        assert [(await call(1)).ok for _ in range(2)] == [True, True]
        third = await call(1)
        assert isinstance(third.error, wisp.RateLimited)
        assert 29.0 < third.error.retry_after <= 30.0
        assert third.response.content.startswith("Slow down: try again in")
        assert (await call(2)).ok  # the guild's third
        assert isinstance((await call(3)).error, wisp.RateLimited)  # guild bucket spent
        assert (await call(3, guild=2)).ok


async def test_config_overrides_defaults_and_bad_limits_fail_start_up(project) -> None:
    @wisp.command()
    async def calm(ctx) -> str:
        return "calm"

    app = app_with(
        project,
        [calm, wave],
        '[ratelimit]\ndefault = ["1/60s per user"]\n'
        '[ratelimit.commands]\nwave = ["1/60s per command"]\n',
    )
    async with app:
        assert (await app.call("calm", user_id=1)).ok
        assert not (await app.call("calm", user_id=1)).ok
        assert (await app.call("wave", user_id=1)).ok
        assert not (await app.call("wave", user_id=2)).ok  # per command: everyone shares

    @wisp.command(rate_limit="0/10s")
    async def broken(ctx) -> str:
        return ""

    with pytest.raises(
        wisp.ConfigError,
        match=r"command 'broken' .* metadata rate_limit: "
        r"'0/10s': the number of calls must be at least 1",
    ):
        app_with(project, [broken]).configure()
    with pytest.raises(wisp.ConfigError, match=r"ratelimit.commands.wave\[0\]: '5/10q'"):
        app_with(project, [wave], '[ratelimit.commands]\nwave = ["5/10q"]\n').configure()


@pytest.mark.needs_plugin("policy", "storage")
async def test_a_denied_call_takes_no_token(project, database) -> None:
    url, schema = database
    project.write(
        "bot/vip.py",
        """
        import wisp

        @wisp.command(capability="vip.enter", rate_limit="1/60s per command")
        async def enter(ctx) -> str:
            return "in"
    """,
    )
    app = app_with(
        project,
        [],
        f'[wisp]\ncommand_paths = ["bot"]\n[storage]\nurl = "{url}"\n'
        f'schema = "{schema}"\nauto_migrate = true\n',
        plugins=("storage", "policy", "ratelimit"),
    )
    async with app:
        from wisp.plugins.policy.engine import Action, Rule, Scope

        await app.services.get("policy").add(Rule("vip.enter", Action.DENY, Scope.USER, 9, 0, 1))
        denied = await app.call("enter", guild_id=1, user_id=9)
        assert isinstance(denied.error, wisp.PermissionDenied)
        assert (await app.call("enter", guild_id=1, user_id=8)).ok  # the token was still there


async def test_concurrency_limit(project) -> None:
    gate = asyncio.Event()

    @wisp.command(concurrency="1 per user")
    async def slow(ctx) -> str:
        await gate.wait()
        return "done"

    app = app_with(project, [slow])
    async with app:
        first = asyncio.create_task(app.call("slow", user_id=1))
        await asyncio.sleep(0.01)
        second = await app.call("slow", user_id=1)
        assert isinstance(second.error, wisp.RateLimited)
        assert "already running" in second.response.content
        assert (
            await asyncio.wait_for(asyncio.gather(app.call("slow", user_id=2), _release(gate)), 5)
        )[0].ok
        assert (await first).ok
        assert (await app.call("slow", user_id=1)).ok


async def _release(gate: asyncio.Event) -> None:
    await asyncio.sleep(0.01)
    gate.set()


async def test_redis_failure_is_open_or_closed_and_logged(project, log_lines) -> None:
    async def broken(buckets):
        raise ConnectionError("redis is down")

    for mode, ok in (("open", True), ("closed", False)):
        app = app_with(project, [wave], f'[ratelimit]\non_redis_error = "{mode}"\n')
        async with app:
            app.services.get("ratelimit").backend.hit = broken
            outcome = await app.call("wave", user_id=1)
            assert outcome.ok is ok
            if not ok:
                assert isinstance(outcome.error, wisp.ExternalServiceError)
    messages = [r["message"] for r in log_lines]
    assert any("letting wave through (on_redis_error = open)" in m for m in messages)
    assert any("refusing wave (on_redis_error = closed)" in m for m in messages)


# -- Redis --------------------------------------------------------------------


@pytest.mark.slow
async def test_redis_gcra_exact_under_concurrency_and_retries(redis_url) -> None:
    import redis.asyncio as aioredis

    from wisp.plugins.ratelimit.redisbackend import RedisBackend

    pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=50)
    client = aioredis.Redis.from_pool(pool)
    try:
        backend = RedisBackend(client, prefix=f"test:{uuid.uuid4().hex}:")
        limit = Limit(100, 60.0, "command")
        results = await asyncio.gather(*(backend.hit([("one", limit)]) for _ in range(200)))
        assert sum(1 for r in results if r == 0.0) == 100
        assert all(0 < r <= 0.6 for r in results if r)  # the next token is 0.6s away
        # a client retrying at twice the rate still gets its full allowance:
        small = Limit(5, 1.0, "user")
        allowed = 0
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(40):  # ~20 tries/s against 5/s: twice the rate and more
            allowed += (await backend.hit([("retry", small)])) == 0.0
            await asyncio.sleep(0.05)
        elapsed = loop.time() - start
        # a burst of 5, then 5 per second: rejections were not counted as hits
        assert abs(allowed - (5 + 5 * elapsed)) <= 1.5, (allowed, elapsed)
        await client.script_flush()  # NOSCRIPT: redis-py reloads it
        assert await backend.hit([("fresh", small)]) == 0.0
        ttl = await client.pttl(backend.prefix + "fresh")
        assert 0 < ttl <= 1001  # idle buckets vanish
    finally:
        await client.aclose()


@pytest.mark.slow
def test_four_processes_fifty_tasks_exactly_one_hundred(tmp_path, redis_url) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    script = tmp_path / "hammer.py"
    script.write_text(
        textwrap.dedent(f"""
        import asyncio
        import redis.asyncio as aioredis
        from wisp.plugins.ratelimit.limits import Limit
        from wisp.plugins.ratelimit.redisbackend import RedisBackend

        async def main():
            pool = aioredis.BlockingConnectionPool.from_url({redis_url!r}, max_connections=50)
            client = aioredis.Redis.from_pool(pool)
            backend = RedisBackend(client, prefix={prefix!r})
            limit = Limit(100, 3600.0, "command")
            results = await asyncio.gather(*(backend.hit([("shared", limit)])
                                             for _ in range(50)))
            print(sum(1 for r in results if r == 0.0))
            await client.aclose()

        asyncio.run(main())
    """)
    )
    for _ in range(3):  # repeated runs, fresh bucket each time
        procs = [
            subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        counts = [int(p.communicate(timeout=60)[0]) for p in procs]
        assert sum(counts) == 100, counts
        prefix_new = f"test:{uuid.uuid4().hex}:"
        script.write_text(script.read_text().replace(prefix, prefix_new))
        prefix = prefix_new


# -- per-guild overrides --------------------------------------------------------


@pytest.mark.needs_plugin("discord", "policy", "storage")
async def test_a_guild_overrides_a_commands_limits(project, wisp_offline) -> None:
    project.write(
        "bot/wave.py",
        """
        import wisp

        @wisp.command(rate_limit="2/60s per user", description="Wave.")
        async def wave(ctx) -> str:
            return "wave"
    """,
    )
    project.write(
        "wisp.toml",
        '[wisp]\ncommand_paths = ["bot"]\n'
        'plugins = ["storage", "policy", "discord", "ratelimit"]\n',
    )
    bot = await wisp_offline(project.app(autoload=None))
    alice = bot.member_id("alice")
    answer = await bot.slash("ratelimit set", {"command": "wave", "limits": "1/60s"}, user=alice)
    assert answer.replies[0].startswith("You need the `ratelimit.manage` capability")
    answer = await bot.slash("ratelimit set", {"command": "wave", "limits": "1/60s per user"})
    assert answer.replies == ["`/wave` in this server: 1/60s per user. (ephemeral)"]
    assert (await bot.slash("wave", user=alice)).replies == ["wave"]
    assert (await bot.slash("wave", user=alice)).replies[0].startswith("Slow down")
    answer = await bot.slash("ratelimit set", {"command": "wave", "limits": "none"})
    assert answer.replies == ["`/wave` in this server: no limit. (ephemeral)"]
    assert [(await bot.slash("wave", user=alice)).replies for _ in range(4)] == [["wave"]] * 4
    answer = await bot.slash("ratelimit show")
    assert answer.replies == ["/wave: no limit (ephemeral)"]
    answer = await bot.slash("ratelimit set", {"command": "wave", "limits": "3/10 fortnights"})
    assert "unknown unit 'fortnights'" in answer.replies[0]
    answer = await bot.slash("ratelimit set", {"command": "wave", "limits": " , "})
    assert answer.replies[0].startswith("Give limits")
    answer = await bot.slash("ratelimit set", {"command": "nope", "limits": "1/s"})
    assert answer.replies[0].startswith("No command `nope`")
    answer = await bot.slash("ratelimit reset", {"command": "wave"})
    assert answer.replies == ["`/wave` is back to its usual limits. (ephemeral)"]
    bob = bot.member_id("bob")
    replies = [(await bot.slash("wave", user=bob)).replies[0] for _ in range(3)]
    assert replies[:2] == ["wave", "wave"] and replies[2].startswith("Slow down")


@pytest.mark.needs_plugin("storage")
async def test_guild_overrides_from_the_cli_reach_a_running_bot(
    project, monkeypatch, capsys
) -> None:
    project.write(
        "wisp.toml",
        '[wisp]\nautoload = false\ncommand_paths = ["bot"]\n'
        'plugins = ["storage", "ratelimit"]\n[ratelimit]\nguild_cache_seconds = 0\n',
    )
    project.write(
        "bot/wave.py",
        """
        import wisp

        @wisp.command(rate_limit="5/60s per guild")
        async def wave(ctx) -> str:
            return "wave"
    """,
    )
    monkeypatch.chdir(project.root)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    app = project.app(autoload=None)
    async with app:  # a bot already running while an operator changes the limit
        assert (await app.call("wave", guild_id=7, user_id=1)).ok
        code, out, _ = await asyncio.to_thread(
            run, "ratelimit", "set", "wave", "1/60s per guild", "--guild", "7"
        )
        assert (code, out) == (0, "wave in guild 7: 1/60s per guild\n")
        assert (await app.call("wave", guild_id=7, user_id=1)).ok  # a new bucket
        assert isinstance((await app.call("wave", guild_id=7, user_id=2)).error, wisp.RateLimited)
        assert (await app.call("wave", guild_id=8, user_id=2)).ok  # other guilds unaffected
    code, out, _ = await asyncio.to_thread(run, "ratelimit", "show", "--guild", "7")
    assert (code, out) == (0, "wave: 1/60s per guild\n")
    code, _, err = await asyncio.to_thread(run, "ratelimit", "set", "wave", "0/s", "--guild", "7")
    assert code == 2 and "'0/s': the number of calls must be at least 1" in err
    with pytest.raises(SystemExit):  # argparse: a limit, or none, is required
        await asyncio.to_thread(run, "ratelimit", "set", "wave", "--guild", "7")
    assert "the following arguments are required: limits" in capsys.readouterr().err
    code, out, _ = await asyncio.to_thread(run, "ratelimit", "show", "--guild", "7")
    assert (code, out) == (0, "wave: 1/60s per guild\n")  # nothing was lifted
    code, out, _ = await asyncio.to_thread(run, "ratelimit", "reset", "wave", "--guild", "7")
    assert (code, out) == (0, "wave in guild 7: reset\n")
