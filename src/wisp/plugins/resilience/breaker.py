"""Circuit breaker: stop calling what keeps failing, then probe it carefully.

Bundled plugin ``breaker``; block it with ``-p no:breaker``.

Closed, the breaker counts outcomes: ``failure_threshold`` consecutive
failures, or a ``failure_rate`` or ``slow_call_rate`` over a sliding window
(the last ``window`` calls, or the last ``window_seconds``) once it holds
``min_calls``, open it.  Open, calls fail fast with :class:`CircuitOpen` for
``open_seconds``; then ``half_open_calls`` probes are let through: all
succeeding closes it, one failing opens it again.  ``mode`` forces it open,
disables it, or records without ever blocking (metrics only).

Every check and transition happens between two awaits, so on one event loop
a transition happens once however many calls fail together.  With ``shared =
true`` the open state and the half-open probes live in Redis (through the
``redis`` plugin): every process sees the breaker open, and the probes are
counted across processes.  Closed calls never touch Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import attrs
from loguru import logger

import wisp
from wisp.config import positive
from wisp.errors import NotFound, PermissionDenied, UserError
from wisp.plugins.resilience.api import (
    AsyncFn,
    BulkheadFull,
    CircuitOpen,
    EventKind,
    LoadShed,
    Pattern,
    PatternConfig,
    PatternKind,
    Reason,
    _ignored,
    generate_wrapper,
)

__all__ = ["BreakerConfig", "BreakerState", "CircuitBreaker"]


WISP_PLUGIN = wisp.PluginMetadata(
    name="breaker",
    description="The circuit breaker pattern for resilience policies.",
    api=">=1.0,<2",
    data="Nothing.",
)


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"
    METRICS_ONLY = "metrics_only"


# Module-level names for the call path: an enum member read through its class
# costs about ten times a global read on CPython 3.11.
_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN
_FORCED_OPEN = BreakerState.FORCED_OPEN
_DISABLED = BreakerState.DISABLED
_METRICS_ONLY = BreakerState.METRICS_ONLY


def _rate(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not 0 < value <= 1:
        raise ValueError(f"{attribute.name} must be in (0, 1]")


def _at_least_one(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{attribute.name} must be at least 1")


def _zero_is_none(value: Any) -> Any:
    return None if value == 0 and not isinstance(value, bool) else value


@attrs.frozen(kw_only=True)
class BreakerConfig(PatternConfig):
    #: Consecutive failures that open the breaker; 0 or None turns the count off
    #: (TOML has no null: write 0 when a rate alone should decide).
    failure_threshold: int | None = attrs.field(
        default=5, converter=_zero_is_none, validator=_at_least_one
    )
    #: Failure rate over the window (0-1] that opens it, once ``min_calls`` are in it.
    failure_rate: float | None = attrs.field(default=None, validator=_rate)
    #: A call slower than this counts as slow.
    slow_call_seconds: float | None = attrs.field(default=None, validator=positive)
    #: Slow-call rate over the window (0-1] that opens it.
    slow_call_rate: float | None = attrs.field(default=None, validator=_rate)
    #: Calls in the count-based window.
    window: int = attrs.field(default=100, validator=_at_least_one)
    #: Seconds in a time-based window instead (whole seconds, at least 1).
    window_seconds: float | None = attrs.field(default=None, validator=positive)
    #: Fewest calls in the window before a rate is judged.
    min_calls: int = attrs.field(default=10, validator=_at_least_one)
    #: How long it stays open before probing.
    open_seconds: float = attrs.field(default=30.0, validator=positive)
    #: Probes let through while half-open; all must succeed to close.
    half_open_calls: int = attrs.field(default=1, validator=_at_least_one)
    mode: Literal["normal", "forced_open", "disabled", "metrics_only"] = "normal"
    #: Keep the open state and the probes in Redis, shared by every process.
    shared: bool = False
    #: As for every pattern (errors users cause), plus refusals by this bot's own
    #: bulkheads and load shedding: the dependency did not fail, the bot was busy.
    ignored: tuple[type[BaseException], ...] = attrs.field(
        default=(UserError, PermissionDenied, NotFound, BulkheadFull, LoadShed),
        converter=_ignored,
    )

    def __attrs_post_init__(self) -> None:
        if (
            self.failure_threshold is None
            and self.failure_rate is None
            and (self.slow_call_rate is None)
        ):
            raise ValueError(
                "give failure_threshold, failure_rate or slow_call_rate: "
                "otherwise the breaker never opens"
            )
        if (self.slow_call_rate is None) != (self.slow_call_seconds is None):
            raise ValueError("slow_call_rate and slow_call_seconds go together")


class _CountWindow:
    """The last ``size`` outcomes, with running totals."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.reset()

    def reset(self) -> None:
        self.outcomes = bytearray(self.size)  # bit 1: failure, bit 2: slow
        self.index = 0
        self.calls = self.failures = self.slow = 0

    def add(self, failed: bool, slow: bool) -> None:
        old = self.outcomes[self.index]
        if self.calls == self.size:
            self.failures -= old & 1
            self.slow -= old >> 1
        else:
            self.calls += 1
        new = failed | (slow << 1)
        self.outcomes[self.index] = new
        self.failures += failed
        self.slow += slow
        self.index = (self.index + 1) % self.size


class _TimeWindow:
    """Outcomes of the last ``seconds`` whole seconds, one bucket per second."""

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.size = max(1, math.ceil(seconds))
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        self.buckets = [[-1, 0, 0, 0] for _ in range(self.size)]  # second, calls, fails, slow
        self.calls = self.failures = self.slow = 0

    def _roll(self) -> list[int]:
        second = int(self.clock())
        bucket = self.buckets[second % self.size]
        if bucket[0] != second:
            self.calls -= bucket[1]
            self.failures -= bucket[2]
            self.slow -= bucket[3]
            bucket[:] = [second, 0, 0, 0]
        # Drop other buckets that fell out of the window.
        for other in self.buckets:
            if other[0] != -1 and second - other[0] >= self.size:
                self.calls -= other[1]
                self.failures -= other[2]
                self.slow -= other[3]
                other[:] = [-1, 0, 0, 0]
        return bucket

    def add(self, failed: bool, slow: bool) -> None:
        bucket = self._roll()
        bucket[1] += 1
        bucket[2] += failed
        bucket[3] += slow
        self.calls += 1
        self.failures += failed
        self.slow += slow

    def current(self) -> None:
        self._roll()


# Tickets: what a call that was let through must report on completion.
_RECORD, _PROBE, _SKIP = 0, 1, 2

# The wrapper `bind` generates with the inner callable's own signature (see
# api.generate_wrapper): the closed, plain path inline, the rest in `_call`.
_CALL = """
async def _w_call({params}):
    if _w_self._plain_closed:
        try:
            _w_result = await _w_inner({call})
        except BaseException as _w_exc:
            _w_self._after(0, _w_exc, 0.0)
            raise
        if _w_self.consecutive:
            _w_self.consecutive = 0
        _w_self.successes += 1
        if _w_events.active:
            _w_self.emit(_w_SUCCESS)
        return _w_result
    if _w_self._shared is not None:
        return await _w_self._call_shared(lambda: _w_inner({call}))
    # Admit (or refuse, raising CircuitOpen) right here: a refusal is the
    # open breaker's whole job, so it takes no further frame.
    _w_ticket = _w_self._before()
    return await _w_self._call(_w_ticket, lambda: _w_inner({call}))
"""


class CircuitBreaker(Pattern):
    """A circuit breaker; see the module docstring for the states."""

    kind = "breaker"
    config_class = BreakerConfig
    config: BreakerConfig

    def __init__(
        self,
        config: BreakerConfig | None = None,
        *,
        policy: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config, policy=policy)
        c = self.config
        self._clock = clock
        self.state = {
            "normal": _CLOSED,
            "forced_open": _FORCED_OPEN,
            "disabled": _DISABLED,
            "metrics_only": _METRICS_ONLY,
        }[c.mode]
        self.open_until = 0.0
        self.consecutive = 0
        self.window: _CountWindow | _TimeWindow = (
            _CountWindow(c.window)
            if c.window_seconds is None
            else _TimeWindow(c.window_seconds, clock)
        )
        self.successes = self.failures = self.ignored = self.rejected = 0
        self.slow_calls = self.opened = 0
        self._probes_left = 0
        self._probe_successes = 0
        self._needs_window = c.failure_rate is not None or c.slow_call_rate is not None
        self._timed = c.slow_call_seconds is not None
        self._threshold = c.failure_threshold if c.failure_threshold is not None else math.inf
        self._shared: _SharedState | None = None
        #: Closed, no window, no timing, not shared: calls take the short path.
        self._plain_closed = False
        self._refresh_path()

    def _refresh_path(self) -> None:
        self._plain_closed = (
            self.state is _CLOSED
            and not self._needs_window
            and not self._timed
            and self._shared is None
        )

    # -- state machine (no awaits inside: atomic on one event loop) ---------------

    def _transition(self, new: BreakerState, **metadata: Any) -> None:
        old = self.state
        if old is new:
            return
        self.state = new
        self._refresh_path()
        if new is _OPEN:
            self.opened += 1
            self.open_until = self._clock() + metadata.pop("seconds", self.config.open_seconds)
        elif new is _HALF_OPEN:
            self._probes_left = self.config.half_open_calls
            self._probe_successes = 0
        elif new is _CLOSED:
            self.consecutive = 0
            self.window.reset()
        logger.info("circuit breaker {}: {} -> {}", self.name, old.value, new.value)
        self.emit(EventKind.STATE_CHANGED, old_state=old, new_state=new, metadata=metadata)

    def _reject(self, retry_after: float) -> BaseException:
        self.rejected += 1
        if self.events.active:
            self.emit(EventKind.REJECTED, reason=Reason.CIRCUIT_OPEN)
        default = CircuitOpen(self.name, retry_after, self.policy)
        if not self.custom_failure:
            return default
        return self.failure(Reason.CIRCUIT_OPEN, None, default, retry_after=retry_after)

    def _before(self) -> int:
        """Let a call through (and say how to record it) or raise CircuitOpen."""
        state = self.state
        if state is _CLOSED or state is _METRICS_ONLY:
            return _RECORD
        if state is _DISABLED:
            return _SKIP
        if state is _FORCED_OPEN:
            raise self._reject(self.config.open_seconds)
        if state is _OPEN:
            now = self._clock()
            if now < self.open_until:
                raise self._reject(self.open_until - now)
            self._transition(_HALF_OPEN)
        if self._probes_left <= 0:
            raise self._reject(1.0)
        self._probes_left -= 1
        return _PROBE

    def _after(self, ticket: int, exc: BaseException | None, seconds: float) -> None:
        """Record one completed call."""
        if ticket == _SKIP:
            return
        if exc is not None and not self.is_failure(exc):
            self.ignored += 1
            if not isinstance(exc, asyncio.CancelledError):
                self.emit(EventKind.IGNORED_ERROR, exception=exc)
            if ticket == _PROBE and self.state is _HALF_OPEN:
                self._probes_left += 1  # a probe that proved nothing: give it back
            return
        c = self.config
        failed = exc is not None
        slow = c.slow_call_seconds is not None and seconds >= c.slow_call_seconds
        active = self.events.active
        if failed:
            self.failures += 1
            if active:
                self.emit(EventKind.FAILURE, exception=exc, metadata={"seconds": seconds})
        else:
            self.successes += 1
            if active:
                self.emit(EventKind.SUCCESS, metadata={"seconds": seconds})
        if slow:
            self.slow_calls += 1
            if active:
                self.emit(EventKind.SLOW_CALL, metadata={"seconds": seconds})
        if ticket == _PROBE:
            if self.state is not _HALF_OPEN:
                return  # another probe already decided
            if failed:
                self._open("a probe failed")
            else:
                self._probe_successes += 1
                if self._probe_successes >= c.half_open_calls:
                    self._close()
            return
        if failed:
            self.consecutive += 1
        elif self.consecutive:
            self.consecutive = 0
        if self._needs_window:
            self.window.add(failed, slow)
        elif not failed or self.consecutive < self._threshold:
            return  # no window, and the count is short of the threshold
        reason = self._should_open()
        if reason is not None and self.state is _CLOSED:
            self._open(reason)

    def _should_open(self) -> str | None:
        c = self.config
        if c.failure_threshold is not None and self.consecutive >= c.failure_threshold:
            return f"{self.consecutive} consecutive failures"
        if not self._needs_window:
            return None
        w = self.window
        if w.calls < c.min_calls:
            return None
        if c.failure_rate is not None and w.failures / w.calls >= c.failure_rate:
            return f"failure rate {w.failures}/{w.calls}"
        if c.slow_call_rate is not None and w.slow / w.calls >= c.slow_call_rate:
            return f"slow-call rate {w.slow}/{w.calls}"
        return None

    def _open(self, why: str) -> None:
        self._transition(_OPEN, why=why)
        if self._shared is not None:
            self._shared.spawn(self._shared.open(self.config.open_seconds))

    def _close(self) -> None:
        self._transition(_CLOSED)
        if self._shared is not None:
            self._shared.spawn(self._shared.close())

    # -- calls ------------------------------------------------------------------

    def bind(self, inner: AsyncFn) -> AsyncFn:
        return generate_wrapper(
            _CALL,
            inner,
            {"_w_self": self, "_w_events": self.events, "_w_SUCCESS": EventKind.SUCCESS},
        )

    async def _call(self, ticket: int, thunk: Callable[[], Awaitable[Any]]) -> Any:
        """An admitted call off the plain path: half-open probes, windows, timing."""
        timed = self._timed
        clock = self._clock
        start = clock() if timed else 0.0
        try:
            result = await thunk()
        except BaseException as exc:
            self._after(ticket, exc, clock() - start if timed else 0.0)
            raise
        self._after(ticket, None, clock() - start if timed else 0.0)
        return result

    async def _admit(self) -> int:
        if self._shared is not None and self.state in (
            _OPEN,
            _HALF_OPEN,
        ):
            return await self._shared.admit(self)
        return self._before()

    async def _call_shared(self, thunk: Callable[[], Awaitable[Any]]) -> Any:
        ticket = await self._admit()
        clock = self._clock
        start = clock()
        try:
            result = await thunk()
        except BaseException as exc:
            await self._complete(ticket, exc, clock() - start)
            raise
        await self._complete(ticket, None, clock() - start)
        return result

    async def _complete(self, ticket: int, exc: BaseException | None, seconds: float) -> None:
        if ticket == _PROBE and self._shared is not None:
            await self._shared.probe_done(self, exc, seconds)
            return
        self._after(ticket, exc, seconds)

    def guard(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._guard()

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        ticket = await self._admit()
        start = self._clock()
        try:
            yield
        except BaseException as exc:
            await self._complete(ticket, exc, self._clock() - start)
            raise
        await self._complete(ticket, None, self._clock() - start)

    # -- operator controls ----------------------------------------------------------

    def force_open(self) -> None:
        self._transition(_FORCED_OPEN)

    def disable(self) -> None:
        self._transition(_DISABLED)

    def metrics_only(self) -> None:
        self._transition(_METRICS_ONLY)

    def reset(self) -> None:
        """Back to closed with empty counts (and in Redis, when shared)."""
        self._transition(_CLOSED)
        self.consecutive = 0
        self.window.reset()
        if self._shared is not None:
            self._shared.spawn(self._shared.close())

    def status(self) -> dict[str, Any]:
        if isinstance(self.window, _TimeWindow):
            self.window.current()
        out: dict[str, Any] = {
            "state": self.state.value,
            "successes": self.successes,
            "failures": self.failures,
            "ignored": self.ignored,
            "rejected": self.rejected,
            "slow_calls": self.slow_calls,
            "opened": self.opened,
            "consecutive_failures": self.consecutive,
            "window_calls": self.window.calls,
            "window_failures": self.window.failures,
            "shared": self.config.shared,
        }
        if self.state is _OPEN:
            out["open_for_seconds"] = round(max(0.0, self.open_until - self._clock()), 1)
        return out

    # -- shared state ----------------------------------------------------------------

    async def start(self, services: Any = None) -> None:
        if not self.config.shared:
            return
        if services is None or "redis" not in services:
            raise wisp.PluginError(
                f"breaker {self.name}: shared = true needs the redis plugin and [redis] url"
            )
        hub = _Hub.for_service(services.get("redis"))
        self._shared = _SharedState(hub, self)
        self._refresh_path()
        await hub.attach(self)
        await self._shared.sync()

    async def stop(self) -> None:
        if self._shared is not None:
            await self._shared.hub.detach(self)
            self._shared = None
            self._refresh_path()


# Redis scripts: one hash per breaker (state, until in server ms, probes left,
# probe successes).  TIME is the server's clock, the same for every process.
_LUA_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
_LUA_OPEN = (
    _LUA_NOW
    + """
redis.call('HSET', KEYS[1], 'state', 'open', 'until', now + tonumber(ARGV[1]),
           'probes', ARGV[2], 'ok', 0)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) + 86400000)
redis.call('PUBLISH', ARGV[3], ARGV[4])
return tonumber(ARGV[1])
"""
)
_LUA_CLOSE = """
if redis.call('HGET', KEYS[1], 'state') then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return 1
"""
# Returns {decision, ms}: 0 refused (ms until it may probe), 1 closed, 2 a probe.
# ARGV: channel, name, open ms, probes.  Probes unanswered for the open period
# (their process died) are handed out again, so a dead prober cannot keep the
# breaker half-open.
_LUA_ADMIT = (
    _LUA_NOW
    + """
local s = redis.call('HMGET', KEYS[1], 'state', 'until')
if not s[1] then return {1, 0} end
if s[1] == 'open' then
  local left = tonumber(s[2]) - now
  if left > 0 then return {0, left} end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'until', now + tonumber(ARGV[3]))
  redis.call('PUBLISH', ARGV[1], ARGV[2])
elseif tonumber(redis.call('HGET', KEYS[1], 'probes')) <= 0 and now > tonumber(s[2]) then
  redis.call('HSET', KEYS[1], 'probes', ARGV[4], 'ok', 0, 'until', now + tonumber(ARGV[3]))
end
if tonumber(redis.call('HGET', KEYS[1], 'probes')) > 0 then
  redis.call('HINCRBY', KEYS[1], 'probes', -1)
  return {2, 0}
end
return {0, 1000}
"""
)
# ARGV[1]: 1 success, 0 no verdict (give the probe back); returns the state after.
_LUA_PROBED = """
if redis.call('HGET', KEYS[1], 'state') ~= 'half_open' then
  return redis.call('HGET', KEYS[1], 'state') or 'closed'
end
if ARGV[1] == '0' then
  redis.call('HINCRBY', KEYS[1], 'probes', 1)
  return 'half_open'
end
if redis.call('HINCRBY', KEYS[1], 'ok', 1) >= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return 'closed'
end
return 'half_open'
"""
# Returns {state, ms left open}.
_LUA_READ = (
    _LUA_NOW
    + """
local s = redis.call('HMGET', KEYS[1], 'state', 'until')
if not s[1] then return {'closed', 0} end
return {s[1], math.max(0, tonumber(s[2]) - now)}
"""
)

CHANNEL = "wisp:breaker"
PREFIX = "wisp:breaker:"


class _Hub:
    """One Redis subscription per redis service for every shared breaker in the
    process (``RedisService.listen``: it subscribes again after a lost connection)."""

    _hubs: weakref.WeakKeyDictionary[Any, _Hub] = weakref.WeakKeyDictionary()
    #: Seconds the first breaker's start waits for the subscription.
    subscribe_timeout = 10.0

    @classmethod
    def for_service(cls, redis: Any) -> _Hub:
        # By client: a restarted service has a new client, and the scripts need it.
        hub = cls._hubs.get(redis.client)
        if hub is None:
            hub = cls._hubs[redis.client] = _Hub(redis)
        return hub

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        client = redis.client
        self.breakers: dict[str, CircuitBreaker] = {}
        self.scripts = {
            name: client.register_script(text)
            for name, text in (
                ("open", _LUA_OPEN),
                ("close", _LUA_CLOSE),
                ("admit", _LUA_ADMIT),
                ("probed", _LUA_PROBED),
                ("read", _LUA_READ),
            )
        }
        self._listener: asyncio.Task[None] | None = None

    async def attach(self, breaker: CircuitBreaker) -> None:
        self.breakers[breaker.name] = breaker
        if self._listener is not None:
            return
        subscribed = asyncio.Event()
        self._listener = asyncio.create_task(
            self.redis.listen(
                CHANNEL,
                self._changed,
                on_gap=self._resync,
                subscribed=subscribed,
                what="shared breakers",
            ),
            name="wisp-breakers-redis",
        )
        try:
            async with asyncio.timeout(self.subscribe_timeout):
                await subscribed.wait()
        except BaseException as exc:
            self.breakers.pop(breaker.name, None)
            listener, self._listener = self._listener, None  # the next attach tries again
            await wisp.cancel_and_wait(listener)
            if isinstance(exc, TimeoutError):
                raise wisp.PluginError(
                    f"breaker {breaker.name}: could not subscribe to {CHANNEL!r} in Redis "
                    f"within {self.subscribe_timeout:g} s"
                ) from None
            raise

    async def detach(self, breaker: CircuitBreaker) -> None:
        self.breakers.pop(breaker.name, None)
        if not self.breakers and self._listener is not None:
            await wisp.cancel_and_wait(self._listener)
            self._listener = None

    async def _resync(self) -> None:
        """After a lost subscription: changes may have been missed; read them all."""
        for breaker in list(self.breakers.values()):
            await self._changed(breaker.name.encode())

    async def _changed(self, data: Any) -> None:
        name = data.decode() if isinstance(data, bytes) else str(data)
        breaker = self.breakers.get(name)
        if breaker is not None and breaker._shared is not None:
            try:
                await breaker._shared.sync()
            except Exception as exc:
                logger.warning("breaker {}: cannot read shared state: {}", name, exc)


class _SharedState:
    """A breaker's view of its Redis hash; every failure to reach Redis is logged
    and the breaker goes on with its local state."""

    def __init__(self, hub: _Hub, breaker: CircuitBreaker) -> None:
        self.hub = hub
        self.breaker = breaker
        self.key = PREFIX + breaker.name
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, script: str, args: list[Any]) -> Any:
        try:
            return await self.hub.scripts[script](keys=[self.key], args=args)
        except Exception as exc:
            logger.warning(
                "breaker {}: Redis unavailable ({}); using this process's state only",
                self.breaker.name,
                exc,
            )
            return None

    async def open(self, seconds: float) -> None:
        await self._run(
            "open",
            [
                round(seconds * 1000),
                self.breaker.config.half_open_calls,
                CHANNEL,
                self.breaker.name,
            ],
        )

    async def close(self) -> None:
        await self._run("close", [CHANNEL, self.breaker.name])

    async def sync(self) -> None:
        """Apply the shared state to the local breaker."""
        result = await self._run("read", [])
        if result is None:
            return
        state, ms = (x.decode() if isinstance(x, bytes) else x for x in result)
        b = self.breaker
        if b.state in (_FORCED_OPEN, _DISABLED, _METRICS_ONLY):
            return  # a local mode wins over the shared state
        if state == "open":
            b._transition(BreakerState.OPEN, seconds=int(ms) / 1000, why="shared")
            b.open_until = b._clock() + int(ms) / 1000
        elif state == "half_open":
            b._transition(BreakerState.HALF_OPEN, why="shared")
        else:
            b._transition(BreakerState.CLOSED, why="shared")

    async def admit(self, b: CircuitBreaker) -> int:
        result = await self._run(
            "admit",
            [CHANNEL, b.name, round(b.config.open_seconds * 1000), b.config.half_open_calls],
        )
        if result is None:
            return b._before()
        decision, ms = (int(x) for x in result)
        if decision == 1:
            b._transition(BreakerState.CLOSED, why="shared")
            return _RECORD
        if decision == 2:
            if b.state is BreakerState.OPEN:
                b._transition(BreakerState.HALF_OPEN, why="shared")
            return _PROBE
        raise b._reject(ms / 1000)

    async def probe_done(
        self, b: CircuitBreaker, exc: BaseException | None, seconds: float
    ) -> None:
        if exc is not None and b.is_failure(exc):
            b.failures += 1
            b.emit(EventKind.FAILURE, exception=exc, metadata={"seconds": seconds})
            b._transition(BreakerState.OPEN, why="a probe failed")
            await self.open(b.config.open_seconds)
            return
        verdict = "1" if exc is None else "0"
        if exc is None:
            b.successes += 1
        else:
            b.ignored += 1
        state = await self._run("probed", [verdict, b.config.half_open_calls, CHANNEL, b.name])
        if state is None:  # Redis is down: this process decides alone
            if exc is None:
                b.successes -= 1  # _after counts it again
            else:
                b.ignored -= 1
            b._after(_PROBE, exc, seconds)
        elif state in (b"closed", "closed"):
            b._transition(BreakerState.CLOSED, why="probes succeeded")


@wisp.hookimpl
def wisp_resilience_patterns() -> list[PatternKind]:
    return [
        PatternKind(
            "breaker", BreakerConfig, CircuitBreaker, "fail fast while a dependency is failing"
        )
    ]
