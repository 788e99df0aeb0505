"""What resilience patterns share: the pattern base, events, failure handling,
errors, and :class:`Policy`, a named pipeline of patterns.

Each pattern (breaker, retry, timeout, ...) is its own bundled plugin and
module; this module is what they and bot code import.  Importing it never
registers a plugin, so blocking any of them leaves it importable.

A pattern wraps an async callable: ``pattern.bind(inner)`` returns a new
async callable, built once, so a call pays only the pattern's own work.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import functools
import importlib
import inspect
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs
from loguru import logger

from wisp._asyncutil import is_async_callable
from wisp.errors import ExternalServiceError, NotFound, PermissionDenied, UserError, WispError

__all__ = [
    "AsyncFn",
    "BulkheadFull",
    "CallWrapper",
    "CircuitOpen",
    "EventBus",
    "EventKind",
    "FailureContext",
    "LoadShed",
    "Pattern",
    "PatternConfig",
    "PatternKind",
    "Policy",
    "Reason",
    "ResilienceError",
    "ResilienceEvent",
    "TimedOut",
    "current_priority",
    "generate_wrapper",
    "global_bus",
    "priority",
]

T = TypeVar("T")
AsyncFn = Callable[..., Awaitable[Any]]
#: ``wrap(policy, call) -> call``: see the ``wisp_resilience_wrappers`` hook.
CallWrapper = Callable[["Policy", AsyncFn], AsyncFn]


# -- enums ------------------------------------------------------------------------


class Reason(enum.Enum):
    """Why a pattern failed a call."""

    CIRCUIT_OPEN = "circuit_open"
    TIMEOUT = "timeout"
    RETRIES_EXHAUSTED = "retries_exhausted"
    BULKHEAD_FULL = "bulkhead_full"
    LOAD_SHED = "load_shed"
    BACKPRESSURE = "backpressure"
    CONCURRENCY_LIMIT = "concurrency_limit"
    FAILED = "failed"


class EventKind(enum.Enum):
    """What a :class:`ResilienceEvent` reports."""

    STATE_CHANGED = "state_changed"
    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED_ERROR = "ignored_error"
    SLOW_CALL = "slow_call"
    REJECTED = "rejected"
    RETRY = "retry"
    FALLBACK = "fallback"
    TIMEOUT = "timeout"
    LIMIT_CHANGED = "limit_changed"


@attrs.frozen
class ResilienceEvent:
    """One thing that happened in one pattern instance."""

    kind: EventKind
    pattern: str  # the pattern's kind: "breaker", "retry", ...
    name: str  # the instance: "discord-api.breaker"
    policy: str | None = None
    old_state: Any = None
    new_state: Any = None
    reason: Reason | None = None
    exception: BaseException | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    at: float = attrs.field(factory=time.monotonic)


# -- events -------------------------------------------------------------------------


Listener = Callable[[ResilienceEvent], Any]


class EventBus:
    """Listeners for events, delivered after the current call step, never inside it.

    ``emit`` schedules delivery with ``loop.call_soon``: the caller never waits
    for a listener.  A listener may be sync or async; one that raises is
    logged and the others still run.  A bus forwards to its ``parent``: a
    pattern's bus to its policy's, a policy's to the global bus, so a
    listener hears everything below it.  ``active`` is true
    when someone listens here or above: patterns check it before building an
    event, so nobody listening costs nothing.
    """

    def __init__(self, parent: EventBus | None = None) -> None:
        self._listeners: list[Listener] = []
        self._parent = parent
        self._children: weakref.WeakSet[EventBus] = weakref.WeakSet()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.active: bool = parent.active if parent is not None else False
        if parent is not None:
            parent._children.add(self)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)
        self._refresh()

    def set_parent(self, parent: EventBus) -> None:
        """Forward to ``parent`` instead (a pattern joining a policy)."""
        if self._parent is not None:
            self._parent._children.discard(self)
        self._parent = parent
        parent._children.add(self)
        self._refresh()

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)
        self._refresh()

    def _refresh(self) -> None:
        self.active = bool(self._listeners) or (self._parent is not None and self._parent.active)
        for child in self._children:
            child._refresh()

    def emit(self, event: ResilienceEvent) -> None:
        listeners = self._all_listeners()
        if not listeners:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._deliver(listeners, event)
            return
        loop.call_soon(self._deliver, listeners, event)

    def _all_listeners(self) -> list[Listener]:
        out = list(self._listeners)
        if self._parent is not None:
            out += self._parent._all_listeners()
        return out

    def _deliver(self, listeners: list[Listener], event: ResilienceEvent) -> None:
        for listener in listeners:
            try:
                result = listener(event)
                if asyncio.iscoroutine(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._finished)
            except Exception:
                logger.opt(exception=True).error(
                    "resilience event listener {!r} failed on {} of {}",
                    listener,
                    event.kind.name,
                    event.name,
                )

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error("resilience event listener failed")


#: Every pattern's bus forwards here.
global_bus = EventBus()


# -- priorities (load shedding) ------------------------------------------------------

#: The running call's priority: higher survives load shedding longer.
current_priority: contextvars.ContextVar[int] = contextvars.ContextVar("wisp_priority", default=0)


@contextlib.contextmanager
def priority(value: int) -> Iterator[None]:
    """Run the block's calls at ``value`` (0 normal, positive more important)."""
    token = current_priority.set(value)
    try:
        yield
    finally:
        current_priority.reset(token)


# -- errors -------------------------------------------------------------------------


class ResilienceError(ExternalServiceError):
    """A pattern refused or gave up on a call; ``reason`` says which and why."""

    reason: Reason = Reason.FAILED

    def __init__(
        self,
        safe_message: str | None = None,
        *,
        pattern: str = "",
        policy: str | None = None,
        retry_after: float | None = None,
        reason: Reason | None = None,
        detail: str | None = None,
    ) -> None:
        if reason is not None:
            self.reason = reason
        self.pattern = pattern
        self.policy = policy
        self.retry_after = retry_after
        super().__init__(safe_message, detail=detail)


class CircuitOpen(ResilienceError):
    """The circuit breaker is open: the call was not attempted.

    An open breaker raises one for every refused call, so it costs no more
    than a plain exception: no ``__init__`` of its own (``BaseException``
    keeps the arguments in C), attributes read from ``args``, messages
    formatted only when read.
    """

    reason = Reason.CIRCUIT_OPEN
    detail = None

    if TYPE_CHECKING:

        def __init__(self, pattern: str, retry_after: float, policy: str | None = None) -> None: ...

    else:
        __init__ = Exception.__init__

    @property
    def pattern(self) -> str:  # type: ignore[override]
        return str(self.args[0])

    @property
    def retry_after(self) -> float:  # type: ignore[override]
        return float(self.args[1])

    @property
    def policy(self) -> str | None:  # type: ignore[override]
        return self.args[2] if len(self.args) > 2 else None

    @property
    def safe_message(self) -> str:  # type: ignore[override]
        wait = max(1, round(self.retry_after))
        return (
            "This feature is taking a short break after repeated failures; "
            f"please try again in about {wait} second{'s' if wait != 1 else ''}."
        )

    def __str__(self) -> str:
        return f"circuit {self.pattern} is open for {self.retry_after:.1f}s more"


class TimedOut(ResilienceError, TimeoutError):
    """The call took longer than its timeout and was cancelled."""

    reason = Reason.TIMEOUT
    safe_message = "That took too long; please try again."


class BulkheadFull(ResilienceError):
    """No free slot (and no room, or no time, to wait for one)."""

    reason = Reason.BULKHEAD_FULL
    safe_message = "Too many of these are running right now; please try again in a moment."


class LoadShed(ResilienceError):
    """Refused to protect the bot under load (load shedding, backpressure, adaptive limit)."""

    reason = Reason.LOAD_SHED
    safe_message = "The bot is busy right now; please try again in a moment."


# -- failure handling ---------------------------------------------------------------


@attrs.frozen
class FailureContext:
    """Given to ``on_failure`` and ``transform``: what failed, where, and why."""

    pattern: str
    name: str
    policy: str | None
    reason: Reason
    exception: BaseException | None
    metadata: Mapping[str, Any] = attrs.field(factory=dict)


def _import(spec: str, field: str) -> Any:
    if ":" in spec:
        module, _, attr = spec.partition(":")
    else:
        module, sep, attr = spec.rpartition(".")
        if not sep:
            module, attr = "builtins", spec
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{field}: cannot import {spec!r} ({exc})") from None
    return obj


def _exception_types(field: str) -> Callable[[Any], tuple[type[BaseException], ...]]:
    def convert(value: Any) -> tuple[type[BaseException], ...]:
        items = value if isinstance(value, list | tuple) else [value]
        out = []
        for item in items:
            obj = _import(item, field) if isinstance(item, str) else item
            if not (isinstance(obj, type) and issubclass(obj, BaseException)):
                raise ValueError(f"{field}: {item!r} is not an exception type")
            out.append(obj)
        return tuple(out)

    return convert


def _callable(field: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is None:
            return None
        obj = _import(value, field) if isinstance(value, str) else value
        if not callable(obj):
            raise ValueError(f"{field}: {value!r} is not callable")
        return obj

    return convert


def _handled(value: Any) -> tuple[type[BaseException], ...]:
    return _exception_types("handled")(value)


def _ignored(value: Any) -> tuple[type[BaseException], ...]:
    return _exception_types("ignored")(value)


def _predicate(value: Any) -> Any:
    return _callable("predicate")(value)


def _on_failure(value: Any) -> Any:
    return _callable("on_failure")(value)


def _transform(value: Any) -> Any:
    return _callable("transform")(value)


def _exception_type(value: Any) -> type[Exception] | None:
    if value is None:
        return None
    types = _exception_types("raise_as")(value)
    if len(types) != 1 or not issubclass(types[0], Exception):
        raise ValueError(f"raise_as: {value!r} is not one Exception type")
    return types[0]


@attrs.frozen(kw_only=True)
class PatternConfig:
    """Fields every pattern takes; in TOML, types and callables are ``"module:name"``.

    ``handled`` and ``ignored`` say which exceptions count as failures (the
    breaker records them, retry retries them, fallback replaces them);
    ``predicate(exc)`` narrows further.  ``CancelledError`` never counts, and
    by default neither do the errors a user causes (``UserError``,
    ``PermissionDenied``, ``NotFound``): two typos must not open a breaker
    for everyone.
    When the pattern fails a call, ``on_failure(FailureContext)`` runs
    (errors in it are logged, never raised), then ``transform(ctx)`` or
    ``raise_as`` choose what is raised instead of the pattern's own error.
    """

    name: str | None = None
    handled: tuple[type[BaseException], ...] = attrs.field(default=(Exception,), converter=_handled)
    ignored: tuple[type[BaseException], ...] = attrs.field(
        default=(UserError, PermissionDenied, NotFound), converter=_ignored
    )
    predicate: Callable[[BaseException], bool] | None = attrs.field(
        default=None, converter=_predicate
    )
    on_failure: Callable[[FailureContext], Any] | None = attrs.field(
        default=None, converter=_on_failure
    )
    transform: Callable[[FailureContext], BaseException] | None = attrs.field(
        default=None, converter=_transform
    )
    raise_as: type[Exception] | None = attrs.field(default=None, converter=_exception_type)


# -- generated wrappers ---------------------------------------------------------------


def _forwarding(func: Any) -> tuple[str, str, dict[str, Any]] | None:
    """Parameters and call arguments that pass a wrapper's arguments on to ``func``
    exactly, with the defaults the generated code refers to; None when the
    signature cannot be read or uses the generator's reserved ``_w_`` prefix."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    params: list[str] = []
    args: list[str] = []
    defaults: dict[str, Any] = {}
    starred = positional_only = False
    kinds = inspect.Parameter
    for i, p in enumerate(sig.parameters.values()):
        if p.name.startswith("_w_"):
            return None
        default = ""
        if p.default is not kinds.empty:
            defaults[f"_w_default{i}"] = p.default
            default = f"=_w_default{i}"
        if p.kind is kinds.POSITIONAL_ONLY:
            positional_only = True
            params.append(p.name + default)
            args.append(p.name)
            continue
        if positional_only:
            params.append("/")
            positional_only = False
        if p.kind is kinds.POSITIONAL_OR_KEYWORD:
            params.append(p.name + default)
            args.append(p.name)
        elif p.kind is kinds.VAR_POSITIONAL:
            starred = True
            params.append("*" + p.name)
            args.append("*" + p.name)
        elif p.kind is kinds.KEYWORD_ONLY:
            if not starred:
                params.append("*")
                starred = True
            params.append(p.name + default)
            args.append(f"{p.name}={p.name}")
        else:
            params.append("**" + p.name)
            args.append("**" + p.name)
    if positional_only:
        params.append("/")
    return ", ".join(params), ", ".join(args), defaults


def generate_wrapper(template: str, inner: Any, namespace: dict[str, Any]) -> AsyncFn:
    """Build ``async def _w_call`` from ``template`` with ``inner``'s own signature.

    Forwarding ``*args, **kwargs`` costs a tuple and a dict on every call; on
    the hot path of a pattern that is a third of its cost.  Like attrs'
    generated ``__init__``, the wrapper is compiled once from source whose
    ``{params}`` and ``{call}`` are ``inner``'s parameters; ``inner`` is
    ``_w_inner`` in it.  Other names must start with ``_w_``.
    """
    found = _forwarding(inner)
    params, call, defaults = found or ("*args, **kwargs", "*args, **kwargs", {})
    source = template.format(params=params, call=call)
    scope: dict[str, Any] = {**namespace, **defaults, "_w_inner": inner}
    label = getattr(inner, "__qualname__", type(inner).__qualname__)
    exec(compile(source, f"<wisp resilience wrapper of {label}>", "exec"), scope)
    wrapper: AsyncFn = scope["_w_call"]
    return wrapper


# -- patterns ---------------------------------------------------------------------


class Pattern:
    """Base of every resilience pattern.

    Subclasses set ``kind`` and ``config_class`` and implement :meth:`bind`;
    those that can guard an ``async with`` block implement :meth:`guard`.
    """

    kind: ClassVar[str] = "pattern"
    config_class: ClassVar[type[PatternConfig]] = PatternConfig

    def __init__(self, config: PatternConfig | None = None, *, policy: str | None = None) -> None:
        self.config = config if config is not None else self.config_class()
        self.policy = policy
        self.name = self.config.name or (f"{policy}.{self.kind}" if policy else self.kind)
        self.events = EventBus(global_bus)
        handled, ignored = self.config.handled, self.config.ignored
        predicate = self.config.predicate

        def is_failure(exc: BaseException) -> bool:
            if isinstance(exc, asyncio.CancelledError) or not isinstance(exc, handled):
                return False
            if ignored and isinstance(exc, ignored):
                return False
            return predicate is None or bool(predicate(exc))

        #: Does this exception count as a failure of the call?
        self.is_failure = is_failure
        #: Whether :meth:`failure` has anything to do beyond returning the default.
        self.custom_failure = (
            self.config.on_failure is not None
            or self.config.transform is not None
            or self.config.raise_as is not None
        )

    def bind(self, inner: AsyncFn) -> AsyncFn:
        """Wrap ``inner`` once; the result is called many times."""
        raise NotImplementedError

    def guard(self) -> contextlib.AbstractAsyncContextManager[Any] | None:
        """An async context manager guarding a block, or None when the pattern
        cannot (retry and fallback must run the work again or instead)."""
        return None

    def status(self) -> dict[str, Any]:
        """State and counters for ``wisp resilience status``."""
        return {}

    def __call__(self, func: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        """Use the pattern alone as a decorator; async callables only."""
        return _decorate(f"pattern {self.name!r}", self.bind, func)

    async def start(self, services: Any = None) -> None:
        """Connect shared state (Redis) once services run."""

    async def stop(self) -> None:
        """Release what :meth:`start` took."""

    def emit(self, kind: EventKind, **fields: Any) -> None:
        if self.events.active:
            self.events.emit(ResilienceEvent(kind, self.kind, self.name, self.policy, **fields))

    def failure(
        self,
        reason: Reason,
        exc: BaseException | None,
        default: BaseException,
        **metadata: Any,
    ) -> BaseException:
        """What to raise when this pattern fails a call: runs ``on_failure``, then
        ``transform`` or ``raise_as``, else ``default``."""
        config = self.config
        if not self.custom_failure:
            return default
        ctx = FailureContext(self.kind, self.name, self.policy, reason, exc, metadata)
        if config.on_failure is not None:
            try:
                result = config.on_failure(ctx)
                if asyncio.iscoroutine(result):
                    task = asyncio.ensure_future(result)
                    _callback_tasks.add(task)
                    task.add_done_callback(_log_callback_error)
            except Exception:
                logger.opt(exception=True).error(
                    "on_failure callback of {} failed ({})", self.name, reason.value
                )
        if config.transform is not None:
            try:
                replaced = config.transform(ctx)
                if not isinstance(replaced, BaseException):
                    raise TypeError(f"transform returned {replaced!r}, not an exception")
                return replaced
            except Exception:
                logger.opt(exception=True).error(
                    "transform callback of {} failed; raising the original error", self.name
                )
                return default
        if config.raise_as is not None:
            if issubclass(config.raise_as, WispError):
                # Users see safe_message: keep the kind one, not internal detail.
                safe = default.safe_message if isinstance(default, WispError) else None
                try:
                    return config.raise_as(safe, detail=str(default) or reason.value)
                except Exception:  # a subclass with its own signature (RateLimited)
                    pass
            try:
                return config.raise_as(str(default) or reason.value)
            except Exception:
                logger.opt(exception=True).error(
                    "raise_as of {}: cannot build {}; raising the pattern's own error",
                    self.name,
                    config.raise_as.__name__,
                )
        return default


#: Async ``on_failure`` callbacks still running (asyncio keeps only weak references).
_callback_tasks: set[asyncio.Future[Any]] = set()


def _log_callback_error(task: asyncio.Future[Any]) -> None:
    _callback_tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.opt(exception=task.exception()).error("async on_failure callback failed")


@attrs.frozen
class PatternKind:
    """What a pattern plugin contributes through ``wisp_resilience_patterns``."""

    name: str
    config_class: type[PatternConfig]
    factory: Callable[..., Pattern]
    description: str = ""


# -- policies -----------------------------------------------------------------------


def _decorate(
    what: str, bind: Callable[[AsyncFn], AsyncFn], func: Callable[..., Awaitable[T]]
) -> Callable[..., Awaitable[T]]:
    if not is_async_callable(func):
        raise TypeError(
            f"{what} wraps async callables only; "
            f"{getattr(func, '__qualname__', func)!r} is not async"
        )
    bound: Callable[..., Awaitable[T]] = bind(func)
    if inspect.isfunction(func) or inspect.ismethod(func):
        return functools.wraps(func)(bound)
    # An object with an async __call__: no __wrapped__ pointing at the
    # instance, or is_async_callable would follow it and say "not async".
    return bound


class Policy:
    """Patterns applied in order, the first outermost.

    ``[timeout, retry, breaker]`` times out the whole retried call; ``[retry,
    timeout]`` times out each attempt.  Use as a decorator (``@policy``), with
    :meth:`call`, or ``async with policy:`` when every pattern can guard a
    block.
    """

    def __init__(
        self,
        name: str,
        patterns: Sequence[Pattern],
        description: str = "",
        wrappers: Sequence[CallWrapper] = (),
    ) -> None:
        self.name = name
        self.patterns = list(patterns)
        self.description = description
        #: ``wrap(policy, call) -> call``, outermost first (``wisp_resilience_wrappers``).
        self.wrappers = tuple(wrappers)
        #: Events of every pattern in this policy (they forward here, then to
        #: the global bus).
        self.events = EventBus(global_bus)
        for pattern in self.patterns:
            pattern.events.set_parent(self.events)
        self._guards: contextvars.ContextVar[tuple[contextlib.AsyncExitStack, ...]] = (
            contextvars.ContextVar(f"wisp_policy_{name}", default=())
        )

    def bind(self, inner: AsyncFn) -> AsyncFn:
        call = inner
        for pattern in reversed(self.patterns):
            call = pattern.bind(call)
        for wrap in reversed(self.wrappers):  # none unless a plugin asks: no cost
            call = wrap(self, call)
        return call

    def __call__(self, func: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        """Decorate an async function (or an object with an async ``__call__``)."""
        return _decorate(f"resilience policy {self.name!r}", self.bind, func)

    async def call(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``func(*args, **kwargs)`` through the policy once."""
        if not is_async_callable(func):
            raise TypeError(f"resilience policy {self.name!r} wraps async callables only")
        result: T = await self.bind(func)(*args, **kwargs)
        return result

    async def __aenter__(self) -> Policy:
        stack = contextlib.AsyncExitStack()
        guards = []
        for pattern in self.patterns:
            guard = pattern.guard()
            if guard is None:
                raise TypeError(
                    f"policy {self.name!r}: {pattern.kind} cannot guard an `async with` "
                    "block (it would have to run the block again or instead); decorate "
                    "a function or use policy.call()"
                )
            guards.append(guard)
        await stack.__aenter__()
        try:
            for guard in guards:
                await stack.enter_async_context(guard)
        except BaseException:
            await stack.aclose()
            raise
        self._guards.set((*self._guards.get(), stack))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        stacks = self._guards.get()
        self._guards.set(stacks[:-1])
        return bool(await stacks[-1].__aexit__(exc_type, exc, tb))

    def status(self) -> list[dict[str, Any]]:
        return [{"pattern": p.kind, "name": p.name, **p.status()} for p in self.patterns]

    def __repr__(self) -> str:
        return f"<Policy {self.name}: {' -> '.join(p.kind for p in self.patterns)}>"
