"""The ``cache`` service: get, set with a TTL, delete, and ``get_or_set`` with
single flight, over the memory or the Redis backend."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

from cattrs.preconf.json import make_converter
from loguru import logger

import wisp
from wisp.plugins.cache.api import CacheBackend, CacheError
from wisp.plugins.cache.config import CacheConfig
from wisp.plugins.cache.memory import MemoryBackend
from wisp.plugins.metrics.api import Counter, metrics_of

__all__ = ["CacheService"]

T = TypeVar("T")
_MISSING: Any = object()


class CacheService(wisp.BaseService):
    """``ctx.service("cache")``.

    Values are stored as JSON made by a cattrs converter (attrs classes,
    datetimes, enums, ...; never pickle): give ``type=`` to read one back as
    that type, else you get the JSON value (dicts, lists, ...).  ``get_or_set``
    computes a missing value once however many callers of this process miss it
    at the same time; the others wait for that result.
    """

    name = "cache"
    after = ("redis", "metrics")

    def __init__(self, app: wisp.Wisp, config: CacheConfig) -> None:
        super().__init__()
        self.app = app
        self.config = config
        self.backend: CacheBackend = MemoryBackend(config.max_entries)
        self.converter = make_converter()
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._counters: dict[str, Counter] = {}
        self._last_warning = -1e9

    async def start(self) -> None:
        if self.config.backend == "redis":
            if "redis" not in self.app.services:
                raise wisp.PluginError(
                    '[cache] backend = "redis" needs the redis plugin and [redis] url'
                )
            from wisp.plugins.cache.redisbackend import RedisBackend

            self.backend = RedisBackend(
                self.app.services.get("redis").client, self.config.redis_prefix
            )
        await super().start()

    def _count(self, what: str, amount: int = 1) -> None:
        """``wisp.cache.{what}`` += amount, when the metrics plugin is loaded."""
        counter = self._counters.get(what)
        if counter is None:
            registry = metrics_of(self.app)
            if registry is None:
                return
            counter = self._counters[what] = registry.counter(
                f"wisp.cache.{what}", family="wisp.cache", status=what, backend=self.config.backend
            )
        counter.value += amount

    async def health(self) -> wisp.Health:
        if not self.started:
            return wisp.Health(False, "not started")
        if isinstance(self.backend, MemoryBackend):
            return wisp.Health(True, f"memory: {len(self.backend)} of {self.config.max_entries}")
        await self.app.services.get("redis").client.ping()
        return wisp.Health(True, "redis: PING answered")

    # -- serialization -----------------------------------------------------------

    def _dump(self, key: str, value: Any) -> str:
        try:
            return self.converter.dumps(value)
        except (TypeError, ValueError) as exc:
            raise CacheError(
                f"cache key {key!r}: cannot store a value of type "
                f"{type(value).__name__} as JSON: {exc}"
            ) from exc

    def _load(self, key: str, text: str, kind: Any) -> Any:
        try:
            if kind is None:
                return json.loads(text)
            return self.converter.loads(text, kind)
        except Exception as exc:
            name = getattr(kind, "__name__", repr(kind))
            raise CacheError(f"cache key {key!r}: the stored value is not a {name}: {exc}") from exc

    @staticmethod
    def _check(key: str) -> None:
        if not isinstance(key, str) or not key:
            raise CacheError(f"cache key {key!r}: keys are non-empty strings")

    def _ttl(self, ttl: float | None) -> float | None:
        if ttl is None:
            return self.config.default_ttl
        if ttl <= 0:
            raise CacheError(f"cache ttl {ttl!r}: must be greater than 0 seconds")
        return float(ttl)

    # -- operations ----------------------------------------------------------------

    @overload
    async def get(self, key: str, *, type: type[T], default: Any = None) -> T | None: ...
    @overload
    async def get(self, key: str, *, type: None = None, default: Any = None) -> Any: ...

    async def get(self, key: str, *, type: Any = None, default: Any = None) -> Any:
        """The value at ``key`` (as ``type`` when given), or ``default``."""
        self._check(key)
        text = await self._read(key)
        if text is None:
            self._count("misses")
            return default
        self._count("hits")
        return self._load(key, text, type)

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` for ``ttl`` seconds (``[cache] default_ttl`` when not given)."""
        self._check(key)
        text = self._dump(key, value)
        await self._store(key, text, self._ttl(ttl))

    async def _store(self, key: str, text: str, ttl: float | None) -> None:
        backend = self.backend
        if isinstance(backend, MemoryBackend):
            before = backend.evictions
            await backend.set(key, text, ttl)
            if backend.evictions != before:
                self._count("evictions", backend.evictions - before)
            return
        try:
            await backend.set(key, text, ttl)
        except Exception as exc:
            self._failed("write", key, exc)

    async def _read(self, key: str) -> str | None:
        try:
            return await self.backend.get(key)
        except Exception as exc:
            self._failed("read", key, exc)
            return None

    def _failed(self, doing: str, key: str, exc: Exception) -> None:
        """A backend error: raise it, or log it (at most every 10 s) and count it."""
        if self.config.on_redis_error == "raise":
            raise exc
        self._count("errors")
        now = time.monotonic()
        if now - self._last_warning >= 10.0:
            self._last_warning = now
            logger.warning(
                "cache: {} of key {!r} failed, going on without the cache "
                '(on_redis_error = "miss"): {}: {}',
                doing,
                key,
                type(exc).__name__,
                exc,
            )

    async def delete(self, key: str) -> bool:
        """Remove ``key``; whether it was there."""
        self._check(key)
        return await self.backend.delete(key)

    async def clear(self) -> int:
        """Remove every entry (of this bot's prefix, on Redis); how many."""
        return await self.backend.clear()

    async def get_or_set(
        self,
        key: str,
        factory: Callable[[], Awaitable[T] | T],
        ttl: float | None = None,
        *,
        type: Any = None,
    ) -> T:
        """The value at ``key``; on a miss, ``await factory()``, store it and return it.

        Single flight: callers of this process that miss ``key`` while a
        computation runs wait for it instead of starting their own.  An exception
        from ``factory`` reaches every waiting caller and nothing is stored.  A
        caller that is cancelled leaves the computation running for the others.
        """
        self._check(key)
        ttl = self._ttl(ttl)
        text = await self._read(key)
        if text is not None:
            self._count("hits")
            return self._load(key, text, type)  # type: ignore[no-any-return]
        self._count("misses")
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._compute(key, factory, ttl, type))
            self._inflight[key] = future
            future.add_done_callback(lambda f: self._done(key, f))
        return await asyncio.shield(future)

    def _done(self, key: str, future: asyncio.Future[Any]) -> None:
        if self._inflight.get(key) is future:
            del self._inflight[key]
        if not future.cancelled():
            future.exception()  # retrieved: no "never retrieved" warning if all left

    async def _compute(
        self, key: str, factory: Callable[[], Any], ttl: float | None, kind: Any
    ) -> Any:
        # Look again: a computation that ended while we were missing has stored it.
        text = await self._read(key)
        if text is not None:
            return self._load(key, text, kind)
        self._count("computes")
        value = factory()
        if inspect.isawaitable(value):
            value = await value
        await self._store(key, self._dump(key, value), ttl)
        return value
