"""Resilience policies as a user meets them: wisp.toml, command metadata,
the service, the event hook, `wisp resilience status`, and bad config."""

from __future__ import annotations

import asyncio
import json

import pytest

import wisp
from wisp.cli.main import main
from wisp.plugins.resilience.api import CircuitOpen, EventKind, TimedOut
from wisp.plugins.resilience.breaker import BreakerConfig, BreakerState

pytestmark = pytest.mark.needs_plugin("resilience")

PATTERNS = ["resilience", "breaker", "timeout"]

# The timeout inside the breaker: a call that times out counts as a failure.
POLICY = """
[[resilience.policies.flaky-api]]
pattern = "breaker"
failure_threshold = 2
open_seconds = 60

[[resilience.policies.flaky-api]]
pattern = "timeout"
seconds = 0.2
"""

FLAKY = """
import asyncio
import wisp


CALLS = []

@wisp.command(resilience="flaky-api", description="Call the flaky API.")
async def fetch(ctx, mode: str = "ok") -> str:
    CALLS.append(mode)
    if mode == "fail":
        raise ConnectionError("the API is down")
    if mode == "hang":
        await asyncio.sleep(10)
    return "fetched"
"""


def write(project, toml: str = POLICY, plugins=PATTERNS) -> None:
    project.write("wisp.toml", f'[wisp]\ncommand_paths = ["bot"]\n{toml}')
    project.write("bot/flaky.py", FLAKY)


@pytest.mark.needs_plugin("breaker", "timeout")
async def test_a_command_runs_through_its_policy(project) -> None:
    write(project)
    app = project.app(plugins=PATTERNS)
    async with app:
        assert (await app.call("fetch")).response.content == "fetched"
        hung = await app.call("fetch", {"mode": "hang"})
        assert isinstance(hung.error, TimedOut)
        assert hung.response.content == "That took too long; please try again."
        assert not (await app.call("fetch", {"mode": "fail"})).ok  # 2 failures in a row: open
        refused = await app.call("fetch")
        assert isinstance(refused.error, CircuitOpen)
        assert refused.response.content.startswith(
            "This feature is taking a short break after repeated failures"
        )
        status = app.services.get("resilience").status()
        assert [p["pattern"] for p in status["flaky-api"]] == ["breaker", "timeout"]
        assert status["flaky-api"][1]["timeouts"] == 1
        assert status["flaky-api"][0]["state"] == "open"
        assert status["flaky-api"][0]["rejected"] == 1
        assert status["flaky-api"][0]["failures"] == 2


@pytest.mark.needs_plugin("breaker", "timeout")
async def test_code_uses_a_policy_from_the_service_and_plugins_declare_policies(project) -> None:
    project.write("wisp.toml", "")

    class Declares:
        @wisp.hookimpl
        def wisp_resilience_policies(self, app):
            return {
                "db": [BreakerConfig(failure_threshold=1)],
                "cache": [{"pattern": "timeout", "seconds": 1}],
            }

    app = project.app(plugins=PATTERNS)
    app.register(Declares(), "declares")
    async with app:
        service = app.services.get("resilience")
        db = service.policy("db")

        @db
        async def query() -> int:
            raise ConnectionError("db down")

        with pytest.raises(ConnectionError):
            await query()
        with pytest.raises(CircuitOpen):
            await query()
        assert db.patterns[0].state is BreakerState.OPEN
        assert await service.policy("cache").call(asyncio.sleep, 0, "done") == "done"
        with pytest.raises(KeyError, match=r"no resilience policy 'nope' \(known: cache, db\)"):
            service.policy("nope")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[[resilience.policies.api]]\npattern = "breaker"\nfailure_rate = 2.0\n',
            "resilience.policies.api[0].failure_rate: must be in (0, 1]; got 2.0 (at ",
        ),
        (
            '[[resilience.policies.api]]\npattern = "breaker"\nfailure_rate = 2.0\n',
            "wisp.toml:3) (pattern breaker)",
        ),
        (
            '[[resilience.policies.api]]\npattern = "breaker"\nfailure_treshold = 3\n',
            "resilience.policies.api[0].failure_treshold: unknown key",
        ),
        (
            '[[resilience.policies.api]]\npattern = "breakr"\n',
            "resilience.policies.api[0].pattern: unknown pattern 'breakr' "
            "(known: breaker, timeout); did you mean 'breaker'?",
        ),
        (
            '[[resilience.policies.api]]\npattern = "timeout"\nseconds = "soon"\n',
            "resilience.policies.api[0].seconds: expected float, got 'soon'",
        ),
        (
            '[[resilience.policies.api]]\npattern = "breaker"\nhandled = ["nowhere:Err"]\n',
            "resilience.policies.api[0]: handled: cannot import 'nowhere:Err'",
        ),
    ],
)
@pytest.mark.needs_plugin("breaker", "timeout")
def test_bad_policies_fail_start_up_naming_policy_and_field(project, toml, message) -> None:
    project.write("wisp.toml", toml)
    with pytest.raises(wisp.ConfigError) as info:
        project.app(plugins=PATTERNS).configure()
    assert message in str(info.value)


@pytest.mark.needs_plugin("timeout")
def test_a_blocked_pattern_plugin_is_named(project) -> None:
    project.write(
        "wisp.toml",
        '[wisp]\ndisable = ["breaker"]\n[[resilience.policies.api]]\npattern = "breaker"\n',
    )
    with pytest.raises(
        wisp.ConfigError, match="pattern 'breaker' comes from plugin 'breaker', which is blocked"
    ):
        project.app(plugins=PATTERNS).configure()
    # blocking the breaker leaves the other patterns working
    project.write(
        "wisp.toml",
        '[wisp]\ndisable = ["breaker"]\n[[resilience.policies.api]]\npattern = "timeout"\n',
    )
    app = project.app(plugins=PATTERNS).configure()
    assert "breaker" not in [p.name for p in app.pluginmanager.plugins()]


@pytest.mark.needs_plugin("breaker", "timeout")
def test_unknown_policy_in_command_metadata_fails_start_up(project) -> None:
    write(project, toml="")
    with pytest.raises(
        wisp.ConfigError, match=r"command 'fetch' .* metadata resilience: no policy 'flaky-api'"
    ):
        project.app(plugins=PATTERNS).configure()


@pytest.mark.needs_plugin("breaker", "timeout")
async def test_events_reach_the_hook_off_the_call_path(project) -> None:
    write(project)
    seen = []

    class Listens:
        @wisp.hookimpl
        def wisp_resilience_event(self, event):
            seen.append(event)

    app = project.app(plugins=PATTERNS)
    app.register(Listens(), "listens")
    async with app:
        await app.call("fetch", {"mode": "fail"})
        await app.call("fetch", {"mode": "fail"})
        for _ in range(3):
            await asyncio.sleep(0)
    changes = [e for e in seen if e.kind is EventKind.STATE_CHANGED]
    assert [(e.old_state, e.new_state) for e in changes] == [
        (BreakerState.CLOSED, BreakerState.OPEN)
    ]
    assert changes[0].policy == "flaky-api"


@pytest.mark.needs_plugin("breaker", "timeout")
def test_resilience_status_cli(project, monkeypatch, capsys) -> None:
    write(project)
    monkeypatch.chdir(project.root)
    assert (
        main(
            [
                "-p",
                "resilience",
                "-p",
                "breaker",
                "-p",
                "timeout",
                "--no-autoload",
                "resilience",
                "status",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "flaky-api:"
    assert out[1].split()[:2] == ["breaker", "closed"]
    assert out[2].split()[:2] == ["timeout", "ready"]
    assert (
        main(
            [
                "-p",
                "resilience",
                "-p",
                "breaker",
                "-p",
                "timeout",
                "--no-autoload",
                "resilience",
                "status",
                "--json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["flaky-api"][0]["failures"] == 0


# -- timeout ------------------------------------------------------------------------


async def test_timeout_cancels_overruns_and_leaves_other_timeouts_alone() -> None:
    from wisp.plugins.resilience.api import Policy
    from wisp.plugins.resilience.timeout import Timeout, TimeoutConfig

    t = Timeout(TimeoutConfig(seconds=0.05), policy="p")
    cancelled = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimedOut) as info:
        await t.bind(hang)()
    assert cancelled.is_set() and isinstance(info.value, TimeoutError)
    assert info.value.pattern == "p.timeout"

    async def own_timeout() -> None:
        raise TimeoutError("the library's own")

    with pytest.raises(TimeoutError, match="the library's own") as raw:
        await t.bind(own_timeout)()
    assert not isinstance(raw.value, TimedOut)
    assert t.status()["timeouts"] == 1 and t.status()["calls"] == 2
    async with Policy("p", [t]):
        await asyncio.sleep(0)
    with pytest.raises(TimedOut):
        async with Policy("p", [t]):
            await asyncio.sleep(10)


async def test_async_with_a_policy_is_safe_across_tasks() -> None:
    from wisp.plugins.resilience.api import Policy
    from wisp.plugins.resilience.timeout import Timeout, TimeoutConfig

    policy = Policy("p", [Timeout(TimeoutConfig(seconds=5))])

    async def work(i: int) -> int:
        async with policy:
            await asyncio.sleep(0.001 * (i % 3))
            async with policy:  # nested in one task
                await asyncio.sleep(0)
        return i

    assert await asyncio.gather(*(work(i) for i in range(50))) == list(range(50))


async def test_retry_outside_an_open_breaker_gives_up_at_once() -> None:
    from wisp.plugins.resilience.api import Policy
    from wisp.plugins.resilience.breaker import CircuitBreaker
    from wisp.plugins.resilience.retry import Retry, RetryConfig

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    policy = Policy(
        "api",
        [
            Retry(RetryConfig(attempts=5, backoff=0.01, jitter="none"), sleep=sleep),
            CircuitBreaker(BreakerConfig(failure_threshold=2, open_seconds=30)),
        ],
    )
    with pytest.raises(CircuitOpen):
        await policy.call(down)
    # two real attempts open the breaker; its 30 s retry_after is over
    # max_retry_after (10 s), so retry stops instead of sleeping through it
    assert calls == 2 and slept == [0.01, 0.02]


async def test_policy_emitter_hears_its_patterns_and_patterns_decorate() -> None:
    from wisp.plugins.resilience.api import Policy, ResilienceEvent, global_bus
    from wisp.plugins.resilience.breaker import CircuitBreaker

    first = CircuitBreaker(BreakerConfig(failure_threshold=1), policy="a")
    other = CircuitBreaker(BreakerConfig(failure_threshold=1), policy="b")
    policy_a, policy_b = Policy("a", [first]), Policy("b", [other])
    heard_a: list[ResilienceEvent] = []
    heard_all: list[ResilienceEvent] = []
    policy_a.events.add_listener(heard_a.append)
    global_bus.add_listener(heard_all.append)
    try:

        async def down() -> None:
            raise ConnectionError

        for policy in (policy_a, policy_b):
            with pytest.raises(ConnectionError):
                await policy.call(down)
        for _ in range(3):
            await asyncio.sleep(0)
    finally:
        global_bus.remove_listener(heard_all.append)
    assert {e.policy for e in heard_a} == {"a"}
    assert {e.policy for e in heard_all} == {"a", "b"}

    @first
    async def fine() -> str:
        return "fine"

    first.reset()
    assert await fine() == "fine"
    with pytest.raises(TypeError, match="async callables only"):
        first(lambda: None)


@pytest.mark.needs_plugin("adaptive", "backpressure", "breaker", "timeout")
async def test_fields_checked_against_each_other_work_from_wisp_toml(project) -> None:
    plugins = [*PATTERNS, "backpressure", "adaptive"]
    project.write(
        "wisp.toml",
        '[[resilience.policies.bad]]\npattern = "backpressure"\nhigh_water = 10\nlow_water = 12\n',
    )
    with pytest.raises(wisp.ConfigError, match=r"resilience\.policies\.bad\[0\]: .*low_water"):
        project.app(plugins=plugins).configure()
    project.write(
        "wisp.toml",
        '[[resilience.policies.raid]]\npattern = "backpressure"\nhigh_water = 10\n'
        "low_water = 4\n"
        '[[resilience.policies.api]]\npattern = "adaptive"\nmax_limit = 50\n',
    )
    app = project.app(plugins=plugins)
    async with app:
        service = app.services.get("resilience")
        assert service.policy("raid").patterns[0].config.low_water == 4
        assert service.policy("api").patterns[0].config.max_limit == 50


async def test_a_breaker_outside_a_bulkhead_ignores_its_refusals() -> None:
    from wisp.plugins.resilience.api import BulkheadFull, Policy
    from wisp.plugins.resilience.breaker import CircuitBreaker
    from wisp.plugins.resilience.bulkhead import Bulkhead, BulkheadConfig

    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1))
    policy = Policy("p", [breaker, Bulkhead(BulkheadConfig(max_concurrent=1))])
    gate = asyncio.Event()

    async def slow() -> None:
        await gate.wait()

    first = asyncio.create_task(policy.call(slow))
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFull):
        await policy.call(slow)
    gate.set()
    await first
    assert breaker.state is BreakerState.CLOSED and breaker.ignored == 1
