"""Metrics: counters, gauges and timing histograms with labels, a middleware that
records every invocation's outcome and latency, and ``wisp metrics``.

Bundled plugin ``metrics``; block it with ``-p no:metrics``.  Names follow the
scheme ``wisp.commands.{name}.{status}`` (and ``wisp.events``, ``wisp.jobs``,
``wisp.sagas``, ``wisp.breakers``, ``wisp.ratelimits``).  Code reaches the
registry with ``ctx.service("metrics")``; other plugins import
:mod:`wisp.plugins.metrics.api`, which works (and records nothing) when this
plugin is blocked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from loguru import logger

import wisp
from wisp.errors import (
    ExternalServiceError,
    NotFound,
    PermissionDenied,
    RateLimited,
    UserError,
    WispError,
)
from wisp.plugins.metrics.api import (
    Counter,
    Histogram,
    MetricsRegistry,
    metric_name,
    metrics_of,
    record_outcome,
    registry_key,
)
from wisp.plugins.metrics.config import MetricsConfig
from wisp.plugins.metrics.service import MetricsService
from wisp.targets import Target

__all__ = [
    "MetricsConfig",
    "MetricsRegistry",
    "MetricsService",
    "metrics_of",
    "record_outcome",
    "status_of",
]

_service = wisp.StashKey[MetricsService]()


def status_of(exc: BaseException) -> str:
    """The ``{status}`` of an invocation that raised ``exc``."""
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, PermissionDenied):
        return "denied"
    if isinstance(exc, NotFound):
        return "not_found"
    if isinstance(exc, ExternalServiceError):
        # A resilience refusal says why: circuit_open, timeout, bulkhead_full, ...
        reason = getattr(getattr(exc, "reason", None), "value", None)
        return reason if isinstance(reason, str) else "unavailable"
    if isinstance(exc, UserError | WispError):
        return "user_error"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"


WISP_PLUGIN = wisp.PluginMetadata(
    name="metrics",
    description="Counters, gauges and timings for commands, events, jobs, sagas, "
    "breakers and rate limits; wisp metrics.",
    api=">=1.0,<2",
    data="Nothing about users: counters and timings by command and outcome.",
)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"metrics": MetricsConfig}


@wisp.hookimpl
def wisp_configure(app: wisp.Wisp) -> None:
    service = MetricsService(app, app.config.section(MetricsConfig))
    app.stash[_service] = service
    app.stash[registry_key] = service


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> wisp.Service:
    return app.stash[_service]


def _family(target: Target) -> tuple[str, dict[str, Any]]:
    """``wisp.commands`` and ``{"command": "ping"}`` for a target."""
    if target.kind == "event":
        return "wisp.events", {
            "event": str(getattr(target, "event", target.name)),
            "handler": target.name,
        }
    return f"wisp.{target.kind}s", {target.kind: target.name}


@wisp.hookimpl
def wisp_middleware(app: wisp.Wisp, target: Target) -> wisp.Middleware | None:
    registry = app.stash[_service]
    if target.kind == "event" and not registry.config.events:
        return None
    family, labels = _family(target)
    subject = next(iter(labels.values()))
    clock = time.perf_counter
    # Metrics appear on first use, so `wisp metrics` lists what happened, not every target.
    ok: Counter | None = None
    duration: Histogram | None = None
    failed: dict[str, Counter] = {}
    is_command = target.kind == "command"

    def failure(status: str) -> Counter:
        counter = failed[status] = registry.counter(
            metric_name(family, subject, status), family=family, status=status, **labels
        )
        return counter

    def timing() -> Histogram:
        nonlocal duration
        duration = registry.histogram(
            metric_name(family, subject, "duration"), family=f"{family}.duration", **labels
        )
        return duration

    async def metrics(ctx: wisp.WispContext, call_next: wisp.CallNext) -> Any:
        nonlocal ok
        start = clock()
        try:
            result = await call_next(ctx)
        except BaseException as exc:
            status = status_of(exc)
            (failed.get(status) or failure(status)).value += 1
            if is_command and isinstance(exc, RateLimited):
                registry.counter(
                    metric_name("wisp.ratelimits", subject, "limited"),
                    family="wisp.ratelimits",
                    status="limited",
                    **labels,
                ).value += 1
            (duration or timing()).observe(clock() - start)
            raise
        if ok is None:
            ok = registry.counter(
                metric_name(family, subject, "ok"), family=family, status="ok", **labels
            )
        ok.value += 1
        (duration or timing()).observe(clock() - start)
        return result

    # Just inside the access log: a refused call (policy, rate limit) is counted too.
    return wisp.Middleware("metrics", metrics, wisp.Order.OBSERVE + 1)


#: Run-level saga events whose run is over: they get a duration.
_SAGA_ENDS = frozenset({"completed", "compensated", "needs_attention"})


@wisp.hookimpl(optionalhook=True)  # specified by the sagas plugin, which may be blocked
def wisp_saga_transition(app: wisp.Wisp, run: Any, step: str | None, event: str) -> None:
    """Count saga runs as ``wisp.sagas.{saga}.{event}`` and their steps as
    ``wisp.sagas.{saga}.{step}.{event}`` (``step.completed`` -> ``step_completed``)."""
    registry = app.stash.get(_service, None)
    if registry is None:
        return
    try:
        saga = str(run.saga)
        if step is None:
            seconds = None
            if event == "started":
                starts = registry.saga_starts
                starts[run.id] = time.perf_counter()
                if len(starts) > 10_000:  # runs that ended elsewhere: forget the oldest
                    del starts[next(iter(starts))]
            elif event in _SAGA_ENDS:
                began = registry.saga_starts.pop(run.id, None)
                if began is not None:
                    seconds = time.perf_counter() - began
                elif run.created_at is not None and run.finished_at is not None:
                    # Recovered here after another process started it.
                    seconds = (run.finished_at - run.created_at).total_seconds()
            record_outcome(app, "wisp.sagas", saga, event, seconds)
            return
        status = event.replace(".", "_")
        registry.counter(
            f"{metric_name('wisp.sagas', saga, step)}.{status}",
            family="wisp.sagas.steps",
            saga=saga,
            step=step,
            status=status,
        ).inc()
    except Exception:  # never break the saga engine over a metric
        logger.exception("metrics: cannot count saga event {!r}", event)


@wisp.hookimpl
def wisp_cli_commands() -> Sequence[wisp.CliCommand]:
    from wisp.plugins.metrics.cli import COMMANDS

    return COMMANDS
