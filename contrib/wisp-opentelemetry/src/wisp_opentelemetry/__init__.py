"""OpenTelemetry tracing for Wisp: a span per invocation, per outbound call.

Plugin ``opentelemetry`` (distribution ``wisp-opentelemetry``).  A middleware,
outermost in every target's chain, opens one span per command, event, job and
saga invocation, named ``"{type} {name}"`` with the request id, guild,
channel and user as attributes.  Every call through a resilience policy gets a
``"resilience {policy}"`` client span, a child of the invocation's (through
the resilience plugin's ``wisp_resilience_wrappers`` hook), and every saga
step attempt a ``"saga step {saga}.{step}"`` span (``wisp_saga_transition``).

Spans go to the global tracer provider (set it up with the OpenTelemetry SDK
as usual), or to one put in ``app.stash[TRACER_PROVIDER]`` before configure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

import wisp
from wisp.context import current_context
from wisp.targets import Target

__all__ = ["TRACER_PROVIDER", "OpenTelemetryConfig"]

__version__ = "0.1.0"

#: Put a ``TracerProvider`` here (before ``configure``) to use it instead of the global one.
TRACER_PROVIDER = wisp.StashKey[Any]()


@attrs.frozen
class OpenTelemetryConfig:
    """``[opentelemetry]``."""

    #: Trace at all (false: the plugin adds no middleware and no wrappers).
    enabled: bool = True
    #: Add the invocation's options as ``wisp.option.NAME`` attributes (off: they
    #: may hold personal data).
    record_options: bool = False


_TRACER = wisp.StashKey[Any]()
_SAGA_SPANS = wisp.StashKey[dict[tuple[str, str], tuple[Any, object]]]()
_KINDS = {"command": SpanKind.SERVER, "event": SpanKind.CONSUMER, "job": SpanKind.CONSUMER}


def _tracer(app: wisp.Wisp) -> Any:
    """The app's tracer, made once; None when tracing is off."""
    if _TRACER in app.stash:
        return app.stash[_TRACER]
    config: OpenTelemetryConfig = app.config.section(OpenTelemetryConfig)
    tracer = None
    if config.enabled:
        provider = app.stash.get(TRACER_PROVIDER, None)
        tracer = trace.get_tracer("wisp", __version__, tracer_provider=provider)
    app.stash[_TRACER] = tracer
    return tracer


def _failed(span: Any, exc: BaseException) -> None:
    """Mark a span: a WispError is an answer (attribute only), anything else an error."""
    span.set_attribute("wisp.error", type(exc).__name__)
    if isinstance(exc, Exception) and not isinstance(exc, wisp.WispError):
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"opentelemetry": OpenTelemetryConfig}


@wisp.hookimpl
def wisp_middleware(app: wisp.Wisp, target: Target) -> wisp.Middleware | None:
    tracer = _tracer(app)
    if tracer is None:
        return None
    kind = _KINDS.get(target.kind, SpanKind.INTERNAL)
    plugin = target.plugin or ""
    options = app.config.section(OpenTelemetryConfig).record_options

    async def opentelemetry(ctx: wisp.WispContext, call_next: wisp.CallNext) -> Any:
        attributes: dict[str, Any] = {
            "wisp.request_id": ctx.request_id,
            "wisp.invocation.type": ctx.invocation_type.value,
            "wisp.invocation.name": ctx.name,
            "wisp.plugin": plugin,
        }
        for key, value in (
            ("wisp.guild_id", ctx.guild_id),
            ("wisp.channel_id", ctx.channel_id),
            ("wisp.user_id", ctx.user_id),
            ("wisp.job.id", ctx.job_id),
        ):
            if value is not None:
                attributes[key] = value
        if ctx.job_id is not None:
            attributes["wisp.job.attempt"] = ctx.attempt
        if options:
            for key, value in ctx.options.items():
                attributes[f"wisp.option.{key}"] = (
                    value if isinstance(value, bool | int | float | str) else str(value)
                )
        with tracer.start_as_current_span(
            f"{ctx.invocation_type.value} {ctx.name}",
            kind=kind,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return await call_next(ctx)
            except BaseException as exc:
                _failed(span, exc)
                raise

    # Outermost: the span covers every other middleware, and the request id is set.
    return wisp.Middleware("opentelemetry", opentelemetry, wisp.Order.OUTERMOST)


@wisp.hookimpl
def wisp_resilience_wrappers(app: wisp.Wisp) -> Sequence[Any] | None:
    tracer = _tracer(app)
    if tracer is None:
        return None

    def wrap(policy: Any, call: Any) -> Any:
        name = f"resilience {policy.name}"
        patterns = [str(p.kind) for p in policy.patterns]

        async def traced(*args: Any, **kwargs: Any) -> Any:
            attributes: dict[str, Any] = {
                "wisp.resilience.policy": policy.name,
                "wisp.resilience.patterns": patterns,
            }
            ctx = current_context()
            if ctx is not None:
                attributes["wisp.request_id"] = ctx.request_id
            with tracer.start_as_current_span(
                name,
                kind=SpanKind.CLIENT,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    return await call(*args, **kwargs)
                except BaseException as exc:
                    _failed(span, exc)
                    raise

        return traced

    return [wrap]


_STEP_OPEN = ("step.started", "compensation.started")
_STEP_CLOSE = {
    "step.completed": None,
    "step.retrying": "retrying",
    "step.failed": "failed",
    "compensation.completed": None,
    "compensation.retrying": "retrying",
    "compensation.failed": "failed",
}


@wisp.hookimpl(optionalhook=True)  # the sagas plugin may be blocked or absent
def wisp_saga_transition(app: wisp.Wisp, run: Any, step: str | None, event: str) -> None:
    tracer = _tracer(app)
    if tracer is None:
        return
    spans = app.stash.setdefault(_SAGA_SPANS, {})
    if step is None:
        if event in ("completed", "compensated", "needs_attention"):
            # Whatever a lost lease or a crash left open ends with its run.
            for key in [k for k in spans if k[0] == run.id]:
                span, token = spans.pop(key)
                span.set_status(Status(StatusCode.ERROR, f"run ended ({event})"))
                span.end()
        return
    key = (run.id, step)
    if event in _STEP_OPEN:
        what = "step" if event == "step.started" else "compensate"
        span = tracer.start_span(
            f"saga {what} {run.saga}.{step}",
            attributes={
                "wisp.request_id": run.id,
                "wisp.saga.name": run.saga,
                "wisp.saga.run_id": run.id,
                "wisp.saga.step": step,
            },
        )
        # Current while the step runs, so its outbound calls are its children.
        token = otel_context.attach(trace.set_span_in_context(span))
        spans[key] = (span, token)
        return
    if event in _STEP_CLOSE and key in spans:
        span, token = spans.pop(key)
        otel_context.detach(token)  # type: ignore[arg-type]
        problem = _STEP_CLOSE[event]
        if problem is not None:
            span.set_attribute("wisp.saga.outcome", problem)
            span.set_status(Status(StatusCode.ERROR, problem))
        span.end()
