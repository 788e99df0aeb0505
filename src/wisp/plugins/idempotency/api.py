"""What other code imports to use idempotency: keys, records, errors, the decorator.

Importing this module never registers the idempotency plugin (blocking it
leaves this import working); the decorator finds the ``idempotency`` service
at call time.

The key formula (the one dotmac-tasks used, so other tools compute the same
keys)::

    text = f"{guild}:{user}:{operation}:{canonical_json(params)}"
    key  = sha256(text.encode("utf-8")).hexdigest()[:32]

``guild`` and ``user`` are decimal ids, or empty when there is none;
``operation`` is a name without ``:``; :func:`canonical_json` is JSON with
sorted keys, ``(",", ":")`` separators, non-ASCII characters as UTF-8 (not
``\\u`` escapes) and no NaN or infinity.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import inspect
import json
import typing
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs
import cattrs

from wisp.context import WispContext, current_context
from wisp.errors import WispError

if TYPE_CHECKING:
    from wisp.plugins.idempotency.service import IdempotencyService

__all__ = [
    "ClaimLost",
    "ClaimOutcome",
    "ClaimResult",
    "IdempotencyBackend",
    "InProgress",
    "Record",
    "State",
    "canonical_json",
    "idempotency_key",
    "idempotent",
]

#: Hex characters of the SHA-256 digest kept in a key (the source's 32: 128 bits).
KEY_LENGTH = 32
#: The longest key a backend stores (keys callers make themselves included).
MAX_KEY = 200

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def canonical_json(params: Any) -> str:
    """The canonical JSON text of ``params``: sorted keys, ``(",", ":")``, UTF-8.

    attrs instances are unstructured with cattrs first.  A value JSON cannot
    hold (a set, a datetime, NaN) is a TypeError naming it, never a silent
    ``str()``: two tools must agree on every byte.
    """
    if attrs.has(type(params)):
        params = cattrs.unstructure(params)
    try:
        return json.dumps(
            params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise TypeError(f"idempotency parameters are not JSON: {exc}") from None


def idempotency_key(
    operation: str,
    params: Any = None,
    *,
    guild_id: int | None = None,
    user_id: int | None = None,
) -> str:
    """The key of ``operation`` with ``params`` for a guild (tenant) and user.

    Deterministic across processes, machines and languages (see the module
    docstring for the exact formula).
    """
    if not isinstance(operation, str) or not operation:
        raise ValueError(f"operation must be a non-empty string, not {operation!r}")
    if ":" in operation:
        raise ValueError(f"operation {operation!r} must not contain ':' (it separates the parts)")
    for name, value in (("guild_id", guild_id), ("user_id", user_id)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"{name} must be an int or None, not {value!r}")
    guild = "" if guild_id is None else str(guild_id)
    user = "" if user_id is None else str(user_id)
    text = f"{guild}:{user}:{operation}:{canonical_json(params)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_LENGTH]


def check_key(key: Any) -> str:
    """``key`` if a backend can store it; else a ValueError naming the problem."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"an idempotency key must be a non-empty string, not {key!r}")
    if len(key) > MAX_KEY:
        raise ValueError(
            f"idempotency key {key[:40]!r}... is {len(key)} characters long; at most {MAX_KEY} "
            "(hash long inputs with idempotency_key())"
        )
    return key


class State(enum.StrEnum):
    """Where an operation stands under its key."""

    #: Claimed by ``owner`` until ``expires_at``; past it, another caller may take over.
    IN_PROGRESS = "in_progress"
    #: Ran to the end; ``result`` answers every repeat until ``expires_at``.
    COMPLETED = "completed"
    #: Raised ``error``; the next caller runs it again.
    FAILED = "failed"


@attrs.frozen
class Record:
    """What a backend holds for one key.  Times are the backend's clock, UTC."""

    key: str
    state: State
    owner: str | None
    attempts: int
    result: Any
    error: str | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime

    def as_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["state"] = self.state.value
        for name in ("created_at", "updated_at", "expires_at"):
            out[name] = out[name].isoformat()
        return out


class ClaimOutcome(enum.Enum):
    """What a claim found."""

    #: The caller owns the key now and must run the operation.
    WON = "won"
    #: The operation completed before: ``record.result`` is its result.
    COMPLETED = "completed"
    #: Another owner is running it and its claim has not expired.
    IN_PROGRESS = "in_progress"


@attrs.frozen
class ClaimResult:
    """A backend's answer to a claim; ``record`` is ``None`` for a fresh win."""

    outcome: ClaimOutcome
    record: Record | None = None


class InProgress(WispError):
    """A repeat arrived while the first attempt still runs (its claim is live).

    A :class:`~wisp.errors.WispError`: in a command its ``safe_message`` is the
    reply.  ``owner`` and ``expires_at`` say whose claim and until when.
    """

    safe_message = "Still working on it: this request is already running. Try again in a moment."

    def __init__(
        self,
        key: str,
        owner: str | None = None,
        expires_at: datetime | None = None,
        safe_message: str | None = None,
    ) -> None:
        self.key = key
        self.owner = owner
        self.expires_at = expires_at
        until = f" until {expires_at.isoformat()}" if expires_at is not None else ""
        super().__init__(
            safe_message, detail=f"idempotency key {key!r} is in progress (owner {owner}{until})"
        )


class ClaimLost(Exception):
    """The claim expired and another caller took the key over before this one
    finished: its result was not stored (the operation may have run twice)."""

    def __init__(self, key: str, action: str) -> None:
        self.key = key
        super().__init__(
            f"idempotency key {key!r}: cannot {action}: the claim expired and another "
            "caller owns the key now (raise lease_seconds or keep heartbeat on)"
        )


class IdempotencyBackend(Protocol):
    """Storage of keys: SQL (SQLite, PostgreSQL) or Redis.

    Every write about a claimed key names its ``owner`` and is refused
    (``False``) when the key is no longer that owner's claim.
    """

    async def claim(self, key: str, owner: str, lease_seconds: float) -> ClaimResult: ...

    async def complete(self, key: str, owner: str, result: Any, ttl_seconds: float) -> bool: ...

    async def fail(self, key: str, owner: str, error: str, ttl_seconds: float) -> bool: ...

    async def extend(self, key: str, owner: str, lease_seconds: float) -> bool: ...

    async def get(self, key: str) -> Record | None: ...

    async def delete(self, key: str) -> bool: ...

    async def cleanup(self) -> int: ...

    async def counts(self) -> dict[str, int]: ...

    async def close(self) -> None: ...


# -- the decorator ---------------------------------------------------------------------


def _return_type(func: Callable[..., Any]) -> Any:
    try:
        hint = typing.get_type_hints(func).get("return")
    except Exception:  # unresolvable annotations: results come back as stored JSON
        return None
    return None if hint in (None, type(None), Any) else hint


def idempotent(
    operation: str | None = None,
    *,
    ttl: float | None = None,
    lease: float | None = None,
    key: Callable[..., str] | None = None,
    service: IdempotencyService | Callable[[], IdempotencyService] | None = None,
) -> Callable[[F], F]:
    """Run the decorated ``async def`` at most once per key; repeats get its stored result.

    The key is :func:`idempotency_key` of ``operation`` (default: the
    function's module and qualified name), the call's arguments other than a
    leading :class:`~wisp.WispContext`, and the context's guild and user;
    ``key(*args, **kwargs)`` replaces it.  A repeat while the first call runs
    raises :class:`InProgress`; after a failure the next call runs again.  The
    stored result is JSON (attrs instances through cattrs, structured back to
    the return annotation).  ``service``: the ``idempotency`` service or a
    callable returning it; default: the current context's.
    """

    def decorate(func: F) -> F:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"@idempotent needs an async function, not {func!r}")
        name = operation or f"{func.__module__}.{func.__qualname__}".replace(":", ".")
        if ":" in name:
            raise ValueError(f"operation {name!r} must not contain ':'")
        signature = inspect.signature(func)
        result_type: Any = None
        resolved = False

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal result_type, resolved
            if not resolved:  # annotations may name classes defined after the function
                result_type, resolved = _return_type(func), True
            ctx = args[0] if args and isinstance(args[0], WispContext) else current_context()
            svc = _service(service, ctx, name)
            if key is not None:
                the_key = key(*args, **kwargs)
            else:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                params = dict(bound.arguments)
                if args and isinstance(args[0], WispContext):
                    params.pop(next(iter(signature.parameters)), None)
                the_key = idempotency_key(
                    name,
                    params,
                    guild_id=ctx.guild_id if ctx is not None else None,
                    user_id=ctx.user_id if ctx is not None else None,
                )
            async with svc.idempotent(the_key, ttl=ttl, lease=lease, result_type=result_type) as c:
                if c.replayed:
                    return c.result
                c.result = await func(*args, **kwargs)
                return c.result

        return wrapper  # type: ignore[return-value]

    return decorate


def _service(
    given: IdempotencyService | Callable[[], IdempotencyService] | None,
    ctx: WispContext | None,
    operation: str,
) -> IdempotencyService:
    if given is not None:
        return given if hasattr(given, "idempotent") else given()  # type: ignore[return-value]
    if ctx is None:
        raise RuntimeError(
            f"@idempotent {operation!r}: no Wisp context is running and no service= was given"
        )
    if "idempotency" not in ctx.app.services:
        raise RuntimeError(
            f"@idempotent {operation!r}: the idempotency service is not running "
            "(is the idempotency plugin blocked, or its backend's plugin?)"
        )
    svc: IdempotencyService = ctx.app.services.get("idempotency")
    return svc


def response_record(response: Any) -> dict[str, Any] | None:
    """A :class:`wisp.Response` as stored JSON (``view`` cannot be stored)."""
    if response is None:
        return None
    embed = response.embed
    if embed is not None and hasattr(embed, "to_dict"):
        embed = embed.to_dict()
    elif embed is not None and not isinstance(embed, Mapping):
        embed = None
    return {"content": response.content, "ephemeral": response.ephemeral, "embed": embed}
