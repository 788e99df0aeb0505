"""What plugins import to declare sagas, and what the saga journals share.

Importing this module never registers the sagas plugin: a plugin may build
its :class:`Saga` objects here and return them from ``wisp_sagas`` whether or
not the engine is loaded.

A saga is a named, versioned list of steps.  Each step is an async action
``async def reserve(step: StepContext) -> JSON`` with an optional async
compensation receiving the same kind of context (``step.output`` is the
action's stored output).  Actions and compensations run at least once: a
process that dies mid-step makes the step run again in the process that
recovers the run, so each must make its own side effect idempotent with
``step.key`` (stable per run and step).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from wisp.config import positive

if TYPE_CHECKING:
    from loguru import Logger

    from wisp.context import WispContext

__all__ = [
    "TERMINAL",
    "Action",
    "CompStatus",
    "DefinitionChanged",
    "LeaseLost",
    "Run",
    "RunStatus",
    "Saga",
    "SagaDefinition",
    "SagaJournal",
    "Step",
    "StepContext",
    "StepRecord",
    "StepStatus",
    "dumps_json",
    "step_key",
]


class RunStatus(enum.StrEnum):
    PENDING = "pending"  # stored, not picked up yet
    RUNNING = "running"  # going forward through its steps
    COMPENSATING = "compensating"  # a step gave up (or compensation was asked for)
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    NEEDS_ATTENTION = "needs_attention"  # a compensation kept failing


#: States a run never leaves.
TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.COMPENSATED, RunStatus.NEEDS_ATTENTION})


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"  # intent written; the side effect may have happened
    RETRYING = "retrying"  # an attempt failed; the next is due at ``wake_at``
    COMPLETED = "completed"
    FAILED = "failed"  # every attempt failed


class CompStatus(enum.StrEnum):
    RUNNING = "running"
    RETRYING = "retrying"
    DONE = "done"
    FAILED = "failed"  # every attempt failed: the run needs attention


class LeaseLost(Exception):
    """The journal refused a write: another owner reclaimed the run."""


class DefinitionChanged(Exception):
    """A run's recorded saga version (or steps) differ from the definition here."""


Action = Callable[["StepContext"], Awaitable[Any]]


def dumps_json(value: Any, what: str) -> str:
    """JSON text of ``value``; a value JSON cannot hold is a TypeError naming ``what``."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} is not JSON: {exc}") from None


def step_key(run_id: str, index: int, name: str, *, compensation: bool = False) -> str:
    """The stable key of one step (or its compensation) of one run: the same on
    every re-run, so the step can make its side effect idempotent with it."""
    return f"{run_id}:{index}:{name}" + (":undo" if compensation else "")


@attrs.frozen
class Step:
    """One step: ``action``, and ``compensate`` to undo it after a later step gave up.

    ``attempts`` (None: ``[sagas] attempts``) journaled tries with full-jitter
    exponential backoff from ``backoff`` seconds, capped at ``max_backoff``;
    ``timeout`` seconds per attempt (the deadline is journaled).  ``policy``
    names a resilience policy each attempt runs through when the resilience
    plugin is loaded.  ``compensate_on_failure``: also compensate this step
    when it is the one that gave up (its compensation then gets
    ``output=None``); off by default, as in the source system: a failing step
    must leave nothing behind.
    """

    name: str
    action: Action
    compensate: Action | None = None
    attempts: int | None = attrs.field(default=None, validator=positive)
    backoff: float | None = attrs.field(default=None, validator=positive)
    max_backoff: float | None = attrs.field(default=None, validator=positive)
    timeout: float | None = attrs.field(default=None, validator=positive)
    policy: str | None = None
    compensation_attempts: int | None = attrs.field(default=None, validator=positive)
    compensate_on_failure: bool = False

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or ":" in self.name:
            raise ValueError(f"step {self.name!r}: a non-empty name without ':'")
        for what, fn in (("action", self.action), ("compensation", self.compensate)):
            if fn is not None and not callable(fn):
                raise TypeError(f"step {self.name!r}: {what} {fn!r} is not callable")


@attrs.frozen
class SagaDefinition:
    """A saga as the engine knows it: ``name``, ``version`` and ordered ``steps``."""

    name: str
    version: int
    steps: tuple[Step, ...]

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 200:
            raise ValueError(f"saga {self.name!r}: a non-empty name of at most 200 characters")
        if not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"saga {self.name!r}: version must be a whole number >= 1")
        if not self.steps:
            raise ValueError(f"saga {self.name!r} has no steps")
        names = [s.name for s in self.steps]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"saga {self.name!r}: step names used twice: {', '.join(twice)}")

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    def definition(self) -> SagaDefinition:
        return self


class Saga:
    """Decorator API: build a saga step by step, return it from ``wisp_sagas``.

    ::

        order = Saga("order", version=1)

        @order.step("reserve", attempts=3, timeout=10)
        async def reserve(step):
            return await stock.reserve(step.input["sku"], key=step.key)

        @order.compensation("reserve")
        async def release(step):
            await stock.release(step.output["reservation"], key=step.key)

    Steps run in the order they were declared.  Changing the steps of a saga
    that has runs in flight needs a new ``version``.
    """

    def __init__(self, name: str, *, version: int = 1) -> None:
        self.name = name
        self.version = version
        self._steps: list[dict[str, Any]] = []

    def step(self, name: str | None = None, **options: Any) -> Callable[[Action], Action]:
        """Declare the next step (``name``: the function's name); ``options`` as for
        :class:`Step` (``attempts``, ``backoff``, ``timeout``, ``policy``...)."""

        def decorate(fn: Action) -> Action:
            step_name = name or getattr(fn, "__name__", "")
            if any(s["name"] == step_name for s in self._steps):
                raise ValueError(f"saga {self.name!r}: step {step_name!r} declared twice")
            self._steps.append({"name": step_name, "action": fn, **options})
            Step(**self._steps[-1])  # check the options now, naming the step
            return fn

        return decorate

    def compensation(self, step: str) -> Callable[[Action], Action]:
        """Declare the compensation of the step called ``step``."""

        def decorate(fn: Action) -> Action:
            for entry in self._steps:
                if entry["name"] == step:
                    if entry.get("compensate") is not None:
                        raise ValueError(
                            f"saga {self.name!r}: step {step!r} has a compensation already"
                        )
                    entry["compensate"] = fn
                    return fn
            known = ", ".join(s["name"] for s in self._steps) or "none yet"
            raise ValueError(
                f"saga {self.name!r}: no step {step!r} to compensate (declared: {known}); "
                "declare the step first"
            )

        return decorate

    def definition(self) -> SagaDefinition:
        return SagaDefinition(self.name, self.version, tuple(Step(**s) for s in self._steps))


@attrs.define(kw_only=True)
class StepContext:
    """What a step's action (or compensation) gets.

    ``input``: the saga input; ``outputs``: the outputs of the steps before
    (by name); ``output``: for a compensation, its step's stored output.
    ``key`` is stable across re-runs of this step of this run; ``attempt``
    counts from 1 over every process that ran it.  ``ctx`` is the saga
    invocation's context (``ctx.logger`` carries the request id, which is
    the run id).
    """

    ctx: WispContext
    run_id: str
    saga: str
    step: str
    index: int
    key: str
    attempt: int
    input: Any
    outputs: dict[str, Any]
    output: Any = None
    compensating: bool = False

    @property
    def logger(self) -> Logger:
        return self.ctx.logger.bind(saga=self.saga, step=self.step)

    def service(self, name: str) -> Any:
        return self.ctx.service(name)


@attrs.define(kw_only=True)
class StepRecord:
    """The journal's record of one step (times: epoch seconds of the owner's clock)."""

    name: str
    status: StepStatus = StepStatus.PENDING
    #: Attempts started (interrupted ones included) and attempts that failed:
    #: only failures count against the step's ``attempts``; interruptions
    #: (the process died mid-attempt) against ``[sagas] max_interruptions``,
    #: and only those the step is to blame for (see ``suspect``).
    attempts: int = 0
    failures: int = 0
    interruptions: int = 0
    #: The step was interrupted once while other attempts ran beside it in its
    #: process (not counted: any of them may have killed the process); from
    #: then on each of its attempts asks to run alone in its process.
    suspect: bool = False
    #: The current (or last) attempt runs alone in its process, journaled with
    #: its intent: its interruption is then the step's own, and is counted.
    exclusive: bool = False
    output: Any = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    deadline: float | None = None
    wake_at: float | None = None
    comp: CompStatus | None = None
    comp_attempts: int = 0
    comp_failures: int = 0
    comp_interruptions: int = 0
    comp_suspect: bool = False
    comp_exclusive: bool = False
    comp_error: str | None = None
    comp_started_at: float | None = None
    comp_finished_at: float | None = None
    comp_wake_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status.value}
        for field in attrs.fields(StepRecord):
            value = getattr(self, field.name)
            # None and False are the defaults from_json restores: not stored, so
            # records written before a field existed read the same as new ones.
            if field.name in ("name", "status") or value is None or value is False:
                continue
            out[field.name] = value.value if isinstance(value, enum.Enum) else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepRecord:
        values = dict(data)
        values["status"] = StepStatus(values.get("status", "pending"))
        if values.get("comp") is not None:
            values["comp"] = CompStatus(values["comp"])
        return cls(**values)


@attrs.define(kw_only=True)
class Run:
    """A saga run as journaled.  ``token`` is the current lease's (None before
    the first claim); the request id of its invocations is the run id."""

    id: str
    saga: str
    version: int
    input: Any
    status: RunStatus
    steps: list[StepRecord]
    key: str | None = None
    error: str | None = None
    cancel: bool = False
    owner: str | None = None
    token: str | None = None
    lease_expires_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    #: Not stored: this run was created with its first step's intent (an
    #: inline start), which the engine must not write again.
    intent_stored: bool = attrs.field(default=False, eq=False, repr=False)

    @property
    def outputs(self) -> dict[str, Any]:
        return {s.name: s.output for s in self.steps if s.status is StepStatus.COMPLETED}

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def steps_json(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self.steps]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in attrs.fields(Run):
            value = getattr(self, field.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, enum.Enum):
                value = value.value
            elif field.name == "steps":
                value = self.steps_json()
            out[field.name] = value
        out.pop("token")  # a lease token is a capability, not something to print
        out.pop("intent_stored")
        return out


class SagaJournal(Protocol):
    """Where runs live: SQL (SQLite, PostgreSQL) or Redis.

    Every write an owner makes (``save``, ``heartbeat``, ``release``) names
    the lease token it holds and is refused when the token is no longer the
    run's, or the run is terminal.  Lease times are the store's clock.
    """

    async def create(
        self, run: Run, lease_seconds: float, owner: str | None = None
    ) -> tuple[Run, bool]:
        """Store a new run; with a ``key`` used before, return that run instead.
        The flag says whether this call created it.  Without ``owner`` the run
        is stored unowned, its lease due in ``lease_seconds`` (so a run whose
        dispatch was lost is recovered); with one, it is stored claimed by
        ``owner`` (running, with a token), as a claim would leave it."""
        ...

    async def get(self, run_id: str) -> Run | None: ...

    async def claim(self, run_id: str, owner: str, lease_seconds: float) -> Run | None:
        """Take a non-terminal run that is unowned or whose lease lapsed, with a
        new token (a pending run becomes running); None when it is terminal,
        held by a live lease, or unknown."""
        ...

    async def save(self, run: Run, token: str) -> bool | None:
        """Write the run's status, steps, error (and finish time when terminal);
        None when refused (lease lost or terminal), else the run's ``cancel``
        flag (compensation was asked for)."""
        ...

    async def heartbeat(self, run_id: str, token: str, lease_seconds: float) -> bool: ...

    async def release(self, run_id: str, token: str) -> bool:
        """Give the run up: unowned and due for recovery at once."""
        ...

    async def request_compensation(self, run_id: str) -> Run | None:
        """Set the ``cancel`` flag of a non-terminal run; its owner compensates at
        its next step boundary.  Returns the run (unchanged if terminal)."""
        ...

    async def expired(self, limit: int) -> list[Run]:
        """Non-terminal runs whose lease lapsed (or that were never claimed)."""
        ...

    async def list(
        self, *, status: RunStatus | None = None, saga: str | None = None, limit: int = 100
    ) -> list[Run]:
        """Newest first."""
        ...

    async def counts(self) -> dict[str, int]: ...

    async def purge(self, older_than: datetime) -> int:
        """Delete terminal runs finished before ``older_than``; return how many."""
        ...

    async def close(self) -> None: ...


def new_run(definition: SagaDefinition, run_id: str, input: Any, key: str | None) -> Run:
    return Run(
        id=run_id,
        saga=definition.name,
        version=definition.version,
        input=input,
        key=key,
        status=RunStatus.PENDING,
        steps=[StepRecord(name=n) for n in definition.step_names],
    )


def as_definitions(items: Sequence[Any], plugin: str) -> list[SagaDefinition]:
    out = []
    for item in items:
        make = getattr(item, "definition", None)
        if make is None:
            raise TypeError(
                f"plugin {plugin!r}: wisp_sagas returned {item!r}; expected a Saga or "
                "SagaDefinition"
            )
        out.append(make())
    return out
