"""Cache: one suite on the memory and the Redis backend (get, set with a TTL,
delete, JSON values through cattrs, single-flight ``get_or_set``), then what
only one backend does (the LRU bound, sharing across processes)."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime

import attrs
import pytest

import wisp
from wisp.plugins.cache import CacheError, CacheService
from wisp.plugins.cache.memory import MemoryBackend

pytestmark = pytest.mark.needs_plugin("cache")

REDIS_URL = os.environ.get("WISP_TEST_REDIS_URL")


@attrs.frozen
class Profile:
    name: str
    joined: datetime
    tags: tuple[str, ...] = ()


def cache_app(project, backend: str, extra: str = "", prefix: str | None = None) -> wisp.Wisp:
    toml = f'[cache]\nbackend = "{backend}"\n{extra}'
    plugins = ["cache", "metrics"]
    if backend == "redis":
        prefix = prefix or f"test:{uuid.uuid4().hex}:"
        toml += f'redis_prefix = "{prefix}"\n[redis]\nurl = "{REDIS_URL}"\n'
        plugins.append("redis")
    project.write("wisp.toml", toml)
    return project.app(plugins=plugins)


@pytest.fixture(params=["memory", "redis"])
async def cache(request, project):
    if request.param == "redis":
        request.getfixturevalue("redis_url")  # skipped unset, failed unreachable
    app = cache_app(project, request.param)
    async with app:
        service = app.services.get("cache")
        yield service
        await service.clear()


async def until_missed(cache: CacheService, n: int) -> None:
    """Wait until ``n`` callers have missed: each then waits on the in-flight
    computation or runs it (nothing is awaited between the two)."""
    metrics = cache.app.services.get("metrics")
    labels = {"status": "misses", "backend": cache.config.backend}
    while metrics.value("wisp.cache.misses", **labels) < n:
        await asyncio.sleep(0.001)


@pytest.mark.needs_plugin("metrics", "redis")
async def test_get_set_delete(cache: CacheService) -> None:
    assert await cache.get("missing") is None
    assert await cache.get("missing", default=0) == 0
    await cache.set("n", 1)
    await cache.set("n", 2)  # overwrites
    await cache.set("none", None)
    assert await cache.get("n") == 2
    assert await cache.get("none", default="absent") is None  # a stored None is a value
    assert await cache.delete("n") is True
    assert await cache.delete("n") is False
    assert await cache.get("n") is None


@pytest.mark.needs_plugin("metrics", "redis")
async def test_values_are_json_made_by_cattrs(cache: CacheService) -> None:
    joined = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await cache.set("profile", Profile("ada", joined, ("admin",)))
    assert await cache.get("profile", type=Profile) == Profile("ada", joined, ("admin",))
    # Without a type: the JSON as stored, nothing pickled.
    assert await cache.get("profile") == {
        "name": "ada",
        "joined": "2026-01-02T03:04:05+00:00",
        "tags": ["admin"],
    }
    await cache.set("list", [1, "two", {"three": 3.0}])
    assert await cache.get("list") == [1, "two", {"three": 3.0}]
    # Stored values are copies: changing what was stored changes nothing.
    value = {"a": [1]}
    await cache.set("copy", value)
    value["a"].append(2)
    assert await cache.get("copy") == {"a": [1]}


@pytest.mark.needs_plugin("metrics", "redis")
async def test_bad_input_names_the_key_and_loses_nothing(cache: CacheService) -> None:
    await cache.set("k", "kept")
    with pytest.raises(
        CacheError, match="cache key 'k': cannot store a value of type object as JSON"
    ):
        await cache.set("k", object())
    assert await cache.get("k") == "kept"
    with pytest.raises(CacheError, match="cache key 'k': the stored value is not a Profile"):
        await cache.get("k", type=Profile)
    with pytest.raises(CacheError, match="cache key '': keys are non-empty strings"):
        await cache.get("")
    with pytest.raises(CacheError, match="cache ttl 0: must be greater than 0"):
        await cache.set("k", 1, ttl=0)
    with pytest.raises(CacheError, match="cache key 'o': cannot store a value of type set"):
        await cache.get_or_set("o", lambda: {1j})
    assert await cache.get("o") is None
    assert await cache.get("k") == "kept"


@pytest.mark.needs_plugin("metrics", "redis")
async def test_ttl_expires_values(cache: CacheService) -> None:
    await cache.set("short", "v", ttl=0.05)
    await cache.set("long", "v", ttl=60)
    await cache.set("forever", "v")
    assert await cache.get("short") == "v"
    await asyncio.sleep(0.15)
    assert await cache.get("short") is None
    assert await cache.get("long") == "v"
    assert await cache.get("forever") == "v"


@pytest.mark.needs_plugin("metrics", "redis")
async def test_get_or_set_computes_once_for_concurrent_misses(cache: CacheService) -> None:
    calls = 0
    release = asyncio.Event()

    async def slow() -> dict[str, int]:
        nonlocal calls
        calls += 1
        await release.wait()
        return {"answer": 42}

    waiters = [asyncio.create_task(cache.get_or_set("answer", slow, ttl=60)) for _ in range(50)]
    await until_missed(cache, 50)
    release.set()
    results = await asyncio.gather(*waiters)
    assert calls == 1
    assert results == [{"answer": 42}] * 50
    assert await cache.get("answer") == {"answer": 42}
    # A hit afterwards does not compute, and reads back as the asked type.
    assert await cache.get_or_set("answer", slow) == {"answer": 42}
    assert calls == 1
    metrics = cache.app.services.get("metrics")
    labels = {"backend": cache.config.backend}
    assert metrics.value("wisp.cache.computes", status="computes", **labels) == 1
    assert metrics.value("wisp.cache.misses", status="misses", **labels) == 50


@pytest.mark.needs_plugin("metrics", "redis")
async def test_get_or_set_failure_reaches_every_caller_and_stores_nothing(
    cache: CacheService,
) -> None:
    calls = 0
    release = asyncio.Event()

    async def broken() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        raise ConnectionError("upstream down")

    waiters = [asyncio.create_task(cache.get_or_set("x", broken)) for _ in range(5)]
    await until_missed(cache, 5)
    release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert calls == 1
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await cache.get("x") is None
    # The next caller computes again.
    assert await cache.get_or_set("x", lambda: 7) == 7
    assert await cache.get("x") == 7


@pytest.mark.needs_plugin("metrics", "redis")
async def test_a_cancelled_caller_leaves_the_computation_to_the_others(
    cache: CacheService,
) -> None:
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "done"

    first = asyncio.create_task(cache.get_or_set("k", slow))
    second = asyncio.create_task(cache.get_or_set("k", slow))
    await until_missed(cache, 2)
    first.cancel()
    release.set()
    assert await second == "done"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await cache.get("k") == "done"


@pytest.mark.needs_plugin("metrics", "redis")
async def test_get_or_set_reads_back_as_the_type(cache: CacheService) -> None:
    joined = datetime(2026, 5, 6, tzinfo=UTC)
    made = await cache.get_or_set("p", lambda: Profile("bo", joined), type=Profile)
    again = await cache.get_or_set("p", lambda: Profile("other", joined), type=Profile)
    assert made == again == Profile("bo", joined)


# -- memory only ------------------------------------------------------------------------


@pytest.mark.needs_plugin("metrics")
async def test_memory_is_bounded_least_recently_used_first(project) -> None:
    app = cache_app(project, "memory", "max_entries = 3\n")
    async with app:
        cache = app.services.get("cache")
        for key in "abc":
            await cache.set(key, key)
        assert await cache.get("a") == "a"  # a is now the most recently used
        await cache.set("d", "d")
        assert await cache.get("b") is None
        assert [await cache.get(k) for k in "acd"] == ["a", "c", "d"]
        assert len(cache.backend) == 3
        metrics = app.services.get("metrics")
        assert metrics.value("wisp.cache.evictions", status="evictions", backend="memory") == 1
        assert (await cache.health()).detail == "memory: 3 of 3"


async def test_memory_drops_expired_entries_before_evicting_live_ones() -> None:
    now = [0.0]
    backend = MemoryBackend(2, clock=lambda: now[0])
    await backend.set("old", "1", ttl=1)
    await backend.set("live", "2", ttl=None)
    now[0] = 5.0
    await backend.set("new", "3", ttl=None)
    assert backend.evictions == 0
    assert await backend.get("live") == "2" and await backend.get("new") == "3"


def test_bad_config_names_the_key(project) -> None:
    project.write("wisp.toml", '[cache]\nbackend = "disk"\nmax_entries = 0\n')
    with pytest.raises(wisp.ConfigError) as info:
        project.app(plugins=["cache"]).configure()
    assert "cache.backend" in str(info.value)


@pytest.mark.needs_plugin("redis")
async def test_redis_backend_without_the_redis_plugin_is_off_and_logged(project, log_lines) -> None:
    project.write("wisp.toml", '[cache]\nbackend = "redis"\n')
    async with project.app(plugins=["cache"]) as app:
        assert "cache" not in app.services
    assert any("the cache is off" in r["message"] for r in log_lines)
    # The redis plugin loaded but without a URL: start-up says what is missing.
    project.write("wisp.toml", '[cache]\nbackend = "redis"\n')
    app = project.app(plugins=["cache", "redis"])
    with pytest.raises(wisp.PluginError, match=r"needs the redis plugin and \[redis\] url"):
        await app.start()


# -- redis only --------------------------------------------------------------------------


@pytest.mark.needs_plugin("metrics", "redis")
async def test_redis_values_are_shared_between_processes_within_a_prefix(
    project, redis_url
) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    one = cache_app(project, "redis", prefix=prefix)
    async with one:
        a = one.services.get("cache")
        other = project.__class__(project.root.parent / "other")
        other.root.mkdir()
        two = cache_app(other, "redis", prefix=prefix)
        async with two:
            b = two.services.get("cache")
            await a.set("shared", {"v": 1}, ttl=30)
            assert await b.get("shared") == {"v": 1}
            pttl = await a.backend.client.pttl(prefix + "shared")
            assert 0 < pttl <= 30_000
            third = project.__class__(project.root.parent / "third")
            third.root.mkdir()
            elsewhere = cache_app(third, "redis")
            async with elsewhere:
                c = elsewhere.services.get("cache")
                assert await c.get("shared") is None
                await c.set("mine", 1)
                assert await a.clear() == 1  # only its own prefix
                assert await c.get("mine") == 1
                await c.clear()
            assert await b.get("shared") is None


@pytest.mark.needs_plugin("metrics", "redis")
async def test_a_redis_outage_is_a_miss_or_an_error_as_configured(
    project, log_lines, redis_url
) -> None:
    import redis.asyncio as aioredis
    import redis.exceptions

    for mode in ("miss", "raise"):
        app = cache_app(project, "redis", f'on_redis_error = "{mode}"\n')
        async with app:
            cache = app.services.get("cache")
            await cache.set("k", "stored")
            working = cache.backend.client
            # A real client whose server is gone: nothing listens on port 1.
            down = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
            cache.backend.client = down
            try:
                if mode == "miss":
                    assert await cache.get("k", default="fallback") == "fallback"
                    assert await cache.get_or_set("k", lambda: "computed") == "computed"
                    await cache.set("other", 1)  # logged, not raised
                    metrics = app.services.get("metrics")
                    # get; get_or_set's read, second read and write; set
                    errors = {"status": "errors", "backend": "redis"}
                    assert metrics.value("wisp.cache.errors", **errors) == 5
                    warnings = [
                        r for r in log_lines if "going on without the cache" in r["message"]
                    ]
                    assert len(warnings) == 1  # at most one every 10 s
                    assert "read of key 'k' failed" in warnings[0]["message"]
                else:
                    with pytest.raises(redis.exceptions.ConnectionError):
                        await cache.get("k")
                    with pytest.raises(redis.exceptions.ConnectionError):
                        await cache.get_or_set("k", lambda: "computed")
                # A failed delete must never pass for a done one.
                with pytest.raises(redis.exceptions.ConnectionError):
                    await cache.delete("k")
            finally:
                cache.backend.client = working
                await down.aclose()
            assert await cache.get("k") == "stored"  # nothing was lost
            await cache.clear()
