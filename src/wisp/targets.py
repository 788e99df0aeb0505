"""What an invocation runs: commands and event handlers, free of any transport.

A :class:`Command` knows its name, parameters and metadata (required
capability, rate limit, resilience policy, ...) but nothing of Discord; the
Discord plugin maps it to slash and prefix commands.  Each target remembers
the file its handler was defined in, which decides the ``wispconf.py`` files
that apply to it.
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, get_origin

import attrs

from wisp._asyncutil import is_async_callable, underlying_function
from wisp.errors import UserError

if TYPE_CHECKING:
    from wisp.context import WispContext

__all__ = [
    "Choice",
    "Command",
    "EventHandler",
    "Handler",
    "JobHandler",
    "Param",
    "ParamType",
    "Target",
    "command",
    "event_handler",
    "job",
]

Handler = Callable[..., Awaitable[Any]]


class ParamType(enum.StrEnum):
    """Parameter types every transport can represent."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    USER = "user"
    CHANNEL = "channel"
    ROLE = "role"
    MENTIONABLE = "mentionable"
    ATTACHMENT = "attachment"


_PY_TYPES: dict[Any, ParamType] = {
    str: ParamType.STRING,
    int: ParamType.INTEGER,
    float: ParamType.NUMBER,
    bool: ParamType.BOOLEAN,
}


@attrs.frozen
class Choice:
    """One allowed value of a parameter, with the name a user sees."""

    name: str
    value: str | int | float


Autocomplete = Callable[["WispContext", str], Awaitable[Sequence[Choice | str]]]


def _check_name(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if not value or value != value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"{attribute.name} must be one word without spaces, got {value!r}")


@attrs.frozen
class Param:
    """A typed command parameter."""

    name: str = attrs.field(validator=_check_name)
    type: ParamType = ParamType.STRING
    description: str = ""
    required: bool = True
    default: Any = None
    choices: tuple[Choice, ...] = ()
    autocomplete: Autocomplete | None = None
    min_value: float | None = None
    max_value: float | None = None

    def __attrs_post_init__(self) -> None:
        numeric = self.type in (ParamType.INTEGER, ParamType.NUMBER)
        if (self.min_value is not None or self.max_value is not None) and not numeric:
            raise ValueError(
                f"parameter {self.name!r}: min_value and max_value apply to integer and "
                f"number parameters, not {self.type.value}"
            )

    def convert(self, value: Any) -> Any:
        """Coerce a raw value (a CLI string, say) to this parameter's type."""
        try:
            if self.type is ParamType.BOOLEAN:
                value = _to_bool(value)
            elif self.type in (
                ParamType.INTEGER,
                ParamType.USER,
                ParamType.CHANNEL,
                ParamType.ROLE,
                ParamType.MENTIONABLE,
            ):
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError(value)
                value = int(value)
            elif self.type is ParamType.NUMBER:
                if isinstance(value, bool):
                    raise ValueError(value)
                value = float(value)
            elif self.type is ParamType.STRING:
                value = str(value)
        except (TypeError, ValueError):
            raise UserError(
                f"Option `{self.name}` must be {_ARTICLE[self.type]}, not {value!r}."
            ) from None
        if self.choices and value not in {c.value for c in self.choices}:
            allowed = ", ".join(repr(c.value) for c in self.choices)
            raise UserError(f"Option `{self.name}` must be one of {allowed}.")
        if self.min_value is not None and value < self.min_value:
            raise UserError(f"Option `{self.name}` must be at least {self.min_value}.")
        if self.max_value is not None and value > self.max_value:
            raise UserError(f"Option `{self.name}` must be at most {self.max_value}.")
        return value


_ARTICLE = {
    ParamType.STRING: "text",
    ParamType.INTEGER: "a whole number",
    ParamType.NUMBER: "a number",
    ParamType.BOOLEAN: "true or false",
    ParamType.USER: "a user id",
    ParamType.CHANNEL: "a channel id",
    ParamType.ROLE: "a role id",
    ParamType.MENTIONABLE: "a user or role id",
    ParamType.ATTACHMENT: "an attachment",
}


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


class Target(Protocol):
    """Anything the pipeline runs: a command, an event handler, a job handler."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def handler(self) -> Handler: ...
    @property
    def metadata(self) -> Mapping[str, Any]: ...
    @property
    def plugin(self) -> str | None: ...
    @property
    def source(self) -> Path | None: ...


def source_of(handler: object) -> Path | None:
    """Return the file ``handler`` is defined in, for ``wispconf.py`` scoping."""
    func = underlying_function(handler)
    code = getattr(getattr(func, "__func__", func), "__code__", None)
    if code is None:
        return None
    return Path(code.co_filename).resolve()


def _check_async(handler: object, what: str) -> None:
    if not is_async_callable(handler):
        raise TypeError(f"{what} handler {handler!r} must be an async function")


@attrs.frozen(eq=False)
class Command:
    """A transport-independent command.

    ``name`` may hold spaces for subcommand groups (``"policy set"``).
    ``metadata`` carries what plugins act on: ``capability``, ``rate_limit``,
    ``resilience`` and anything else a plugin documents.
    """

    name: str
    handler: Handler = attrs.field(repr=False)
    description: str = ""
    params: tuple[Param, ...] = ()
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
    plugin: str | None = None
    source: Path | None = None
    kind: Literal["command"] = "command"

    def __attrs_post_init__(self) -> None:
        parts = self.name.split(" ")
        if not 1 <= len(parts) <= 3 or not all(parts):
            raise ValueError(f"command name {self.name!r}: one to three words, single spaces")
        _check_async(self.handler, f"command {self.name!r}")
        if self.source is None:
            object.__setattr__(self, "source", source_of(self.handler))

    @property
    def capability(self) -> str | None:
        """The capability a caller needs, if the command names one."""
        cap = self.metadata.get("capability")
        return str(cap) if cap is not None else None

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None

    def bind(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Check raw options against the parameters and return typed ones."""
        unknown = set(raw) - {p.name for p in self.params}
        if unknown:
            raise UserError(f"Unknown option(s) for `{self.name}`: {', '.join(sorted(unknown))}.")
        out: dict[str, Any] = {}
        for p in self.params:
            if p.name in raw:
                out[p.name] = p.convert(raw[p.name])
            elif p.required:
                raise UserError(f"Option `{p.name}` is required.")
            else:
                out[p.name] = p.default
        return out


@attrs.frozen(eq=False)
class EventHandler:
    """A handler for a transport event such as ``message`` or ``member_join``.

    Lower ``priority`` runs first.  Transports decide how ``ignore_bots`` and
    ``allow_dms`` apply.
    """

    event: str
    handler: Handler = attrs.field(repr=False)
    priority: int = 100
    ignore_bots: bool = True
    allow_dms: bool = False
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
    plugin: str | None = None
    source: Path | None = None
    kind: Literal["event"] = "event"

    def __attrs_post_init__(self) -> None:
        _check_async(self.handler, f"event {self.event!r}")
        if self.source is None:
            object.__setattr__(self, "source", source_of(self.handler))

    @property
    def name(self) -> str:
        return f"{self.event}:{getattr(self.handler, '__qualname__', repr(self.handler))}"


@attrs.frozen(eq=False)
class JobHandler:
    """The handler of one durable job type: ``async def handler(ctx, payload)``.

    The kernel runs it through the pipeline like a command (a context of type
    ``job``); a jobs plugin stores, claims and retries the jobs.  ``metadata``
    carries what such a plugin reads (``queue``, ``max_attempts``, ``timeout``)
    and what middleware reads (``resilience``...).  When the ``payload``
    parameter is annotated with an attrs class, the stored JSON is structured
    into it (and an enqueued instance unstructured).
    """

    type: str
    handler: Handler = attrs.field(repr=False)
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
    plugin: str | None = None
    source: Path | None = None
    kind: Literal["job"] = "job"
    payload_type: Any = attrs.field(default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.type or self.type != self.type.strip() or " " in self.type:
            raise ValueError(f"job type {self.type!r}: a non-empty name without spaces")
        _check_async(self.handler, f"job {self.type!r}")
        if self.source is None:
            object.__setattr__(self, "source", source_of(self.handler))
        if self.payload_type is None:
            object.__setattr__(self, "payload_type", _payload_type(self.handler))

    @property
    def name(self) -> str:
        return self.type


def _payload_type(handler: Handler) -> Any:
    """The attrs class the handler's second parameter is annotated with, if any."""
    params = list(inspect.signature(handler).parameters.values())
    try:
        hints = typing.get_type_hints(handler)
    except Exception as exc:
        raise TypeError(
            f"job handler {getattr(handler, '__qualname__', handler)!r}: cannot resolve "
            f"its annotations ({exc})"
        ) from exc
    if len(params) < 2:
        raise TypeError(
            f"job handler {getattr(handler, '__qualname__', handler)!r} must take (ctx, payload)"
        )
    hint = hints.get(params[1].name)
    return hint if isinstance(hint, type) and attrs.has(hint) else None


def infer_params(handler: Handler) -> tuple[Param, ...]:
    """Build parameters from a handler's signature (after ``ctx``).

    ``str``, ``int``, ``float`` and ``bool`` annotations map to their types,
    ``Literal[...]`` to choices, ``X | None`` or a default to optional.
    """
    sig = inspect.signature(handler)
    try:
        hints = typing.get_type_hints(handler)
    except Exception as exc:
        raise TypeError(
            f"{handler.__qualname__}: cannot resolve parameter annotations ({exc}); "
            "pass params= explicitly"
        ) from exc
    params = list(sig.parameters.values())[1:]
    out: list[Param] = []
    for p in params:
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            raise TypeError(f"{handler.__qualname__}: parameter {p.name!r} must be named")
        hint = hints.get(p.name, str)
        required = p.default is inspect.Parameter.empty
        default = None if required else p.default
        origin = get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in get_args(hint) if a is not type(None)]
            if len(args) != len(get_args(hint)):
                required = False
            if len(args) != 1:
                raise TypeError(
                    f"{handler.__qualname__}: parameter {p.name!r} is {hint!r}; an option has "
                    "one type (X or X | None)"
                )
            hint = args[0]
            origin = get_origin(hint)
        choices: tuple[Choice, ...] = ()
        if origin is Literal:
            values = get_args(hint)
            choices = tuple(Choice(str(v), v) for v in values)
            hint = type(values[0])
        ptype = _PY_TYPES.get(hint)
        if ptype is None:
            raise TypeError(
                f"{handler.__qualname__}: parameter {p.name!r} has type {hint!r}; "
                "use str, int, float, bool or Literal, or pass params= explicitly"
            )
        out.append(Param(p.name, ptype, required=required, default=default, choices=choices))
    return tuple(out)


def command(
    name: str | None = None,
    *,
    description: str | None = None,
    params: Sequence[Param] | None = None,
    capability: str | None = None,
    **metadata: Any,
) -> Callable[[Handler], Command]:
    """Turn an async function ``(ctx, **options)`` into a :class:`Command`.

    In a plugin module (or a file in a command folder) decorated commands at
    module level are collected automatically.
    """

    def decorate(func: Handler) -> Command:
        _check_async(func, f"command {name or getattr(func, '__name__', func)!r}")
        meta = dict(metadata)
        if capability is not None:
            meta["capability"] = capability
        doc = inspect.getdoc(func) or ""
        return Command(
            name=name or func.__name__.replace("_", "-"),
            handler=func,
            description=description if description is not None else doc.split("\n", 1)[0],
            params=tuple(params) if params is not None else infer_params(func),
            metadata=meta,
        )

    return decorate


def job(type: str, **metadata: Any) -> Callable[[Handler], JobHandler]:
    """Turn ``async def handler(ctx, payload)`` into the :class:`JobHandler` of ``type``.

    ``metadata``: ``queue``, ``max_attempts``, ``timeout`` (seconds), and
    anything middleware reads.
    """

    def decorate(func: Handler) -> JobHandler:
        return JobHandler(type, func, metadata)

    return decorate


def event_handler(
    event: str,
    *,
    priority: int = 100,
    ignore_bots: bool = True,
    allow_dms: bool = False,
    **metadata: Any,
) -> Callable[[Handler], EventHandler]:
    """Turn an async function ``(ctx, **payload)`` into an :class:`EventHandler`."""

    def decorate(func: Handler) -> EventHandler:
        return EventHandler(event, func, priority, ignore_bots, allow_dms, metadata)

    return decorate
