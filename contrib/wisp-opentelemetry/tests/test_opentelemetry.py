"""wisp-opentelemetry: spans checked with the SDK's in-memory span exporter."""

from __future__ import annotations

from typing import Any

import pytest
import wisp_opentelemetry
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import wisp

RESILIENCE = """
[[resilience.policies.api]]
pattern = "retry"
attempts = 3
backoff = 0
"""

CALLS: list[str] = []


async def outbound(fail: int) -> str:
    CALLS.append("call")
    if len(CALLS) <= fail:
        raise ConnectionError("refused")
    return "data"


@wisp.command()
async def fetch(ctx: wisp.WispContext, fail: int = 0) -> str:
    CALLS.clear()
    return await ctx.service("resilience").policy("api").call(outbound, fail)


@wisp.command(resilience="api")
async def guarded(ctx: wisp.WispContext) -> str:
    return "ok"


@wisp.command()
async def refuse(ctx: wisp.WispContext) -> str:
    raise wisp.UserError("no")


@wisp.event_handler("member_join")
async def greet(ctx: wisp.WispContext, name: str) -> None:
    await ctx.service("resilience").policy("api").call(outbound, 0)


@wisp.job("mail.send")
async def send(ctx: wisp.WispContext, payload: Any) -> str:
    return "sent"


class Targets:
    @wisp.hookimpl
    def wisp_commands(self) -> list[wisp.Command]:
        return [fetch, guarded, refuse]

    @wisp.hookimpl
    def wisp_event_handlers(self) -> list[wisp.EventHandler]:
        return [greet]

    @wisp.hookimpl
    def wisp_job_handlers(self) -> dict[str, Any]:
        return {"mail.send": send}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def make_app(
    wisp_project: Any,
    exporter: InMemorySpanExporter,
    toml: str = "",
    plugins: tuple[str, ...] = ("resilience", "retry", "opentelemetry"),
) -> wisp.Wisp:
    wisp_project.write("wisp.toml", RESILIENCE + toml)
    app = wisp_project.app(plugins=list(plugins))
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app.stash[wisp_opentelemetry.TRACER_PROVIDER] = provider
    app.register(Targets(), "targets")
    return app


def by_name(exporter: InMemorySpanExporter) -> dict[str, Any]:
    return {span.name: span for span in exporter.get_finished_spans()}


async def test_a_command_span_with_its_outbound_call_as_a_child(wisp_project, exporter) -> None:
    app = make_app(wisp_project, exporter)
    async with app:
        outcome = await app.call("fetch", {"fail": "1"}, guild_id=5, channel_id=6, user_id=7)
    assert outcome.ok
    assert outcome.value == "data"
    spans = by_name(exporter)
    assert set(spans) == {"cli fetch", "resilience api"}
    invocation, call = spans["cli fetch"], spans["resilience api"]
    assert invocation.kind is SpanKind.SERVER
    assert dict(invocation.attributes) == {
        "wisp.request_id": outcome.request_id,
        "wisp.invocation.type": "cli",
        "wisp.invocation.name": "fetch",
        "wisp.plugin": "targets",
        "wisp.guild_id": 5,
        "wisp.channel_id": 6,
        "wisp.user_id": 7,
    }
    assert call.kind is SpanKind.CLIENT
    assert call.parent is not None
    assert call.parent.span_id == invocation.context.span_id
    assert call.context.trace_id == invocation.context.trace_id
    assert call.attributes["wisp.request_id"] == outcome.request_id
    assert call.attributes["wisp.resilience.policy"] == "api"
    assert tuple(call.attributes["wisp.resilience.patterns"]) == ("retry",)
    assert call.status.status_code is StatusCode.UNSET  # the retry succeeded
    assert CALLS == ["call", "call"]  # both attempts inside the one span


async def test_failures_mark_the_spans(wisp_project, exporter) -> None:
    app = make_app(wisp_project, exporter)
    async with app:
        failed = await app.call("fetch", {"fail": "5"})
        refused = await app.call("refuse")
    assert isinstance(failed.error, ConnectionError)
    assert isinstance(refused.error, wisp.UserError)
    spans = exporter.get_finished_spans()
    call, invocation, refusal = spans
    assert call.name == "resilience api"
    assert invocation.name == "cli fetch"
    for span in (call, invocation):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["wisp.error"] == "ConnectionError"
        assert [e.name for e in span.events] == ["exception"]
    # A user error is an answer, not a fault: named, not an error status.
    assert refusal.name == "cli refuse"
    assert refusal.status.status_code is StatusCode.UNSET
    assert refusal.attributes["wisp.error"] == "UserError"


async def test_events_jobs_and_a_policy_in_metadata(wisp_project, exporter) -> None:
    app = make_app(wisp_project, exporter)
    async with app:
        (event,) = await app.emit("member_join", {"name": "ann"}, guild_id=5)
        job = await app.run_job("mail.send", {"to": "x"}, job_id="j1", attempt=2)
        guarded = await app.call("guarded")
    assert event.ok
    assert job.ok
    assert guarded.ok
    spans = exporter.get_finished_spans()
    names = [s.name for s in spans]
    assert names == [
        "resilience api",
        "event member_join",
        "job mail.send",
        "resilience api",
        "cli guarded",
    ]
    ev_call, ev, jb, mw_call, cmd = spans
    assert ev.kind is SpanKind.CONSUMER
    assert ev.attributes["wisp.request_id"] == event.request_id
    assert ev_call.parent.span_id == ev.context.span_id
    assert jb.kind is SpanKind.CONSUMER
    assert jb.attributes["wisp.job.id"] == "j1"
    assert jb.attributes["wisp.job.attempt"] == 2
    assert jb.attributes["wisp.request_id"] == job.request_id
    # The resilience middleware's policy wraps the rest of the chain: a child too.
    assert mw_call.parent.span_id == cmd.context.span_id


async def test_options_only_when_asked(wisp_project, exporter) -> None:
    app = make_app(wisp_project, exporter, "[opentelemetry]\nrecord_options = true\n")
    async with app:
        await app.call("fetch", {"fail": "0"})
    assert by_name(exporter)["cli fetch"].attributes["wisp.option.fail"] == 0


async def test_off_or_blocked_costs_no_layer(wisp_project, exporter) -> None:
    app = make_app(wisp_project, exporter, "[opentelemetry]\nenabled = false\n")
    async with app:
        assert app.services.get("resilience").policy("api").wrappers == ()
        assert [m.name for m in app.compiled(app.commands["fetch"]).middleware] == []
        assert (await app.call("fetch")).ok
    app = make_app(wisp_project, exporter, plugins=("resilience", "retry"))
    async with app:
        assert app.services.get("resilience").policy("api").wrappers == ()
        assert (await app.call("fetch")).ok
    assert exporter.get_finished_spans() == ()
    app = make_app(wisp_project, exporter)
    async with app:
        assert len(app.services.get("resilience").policy("api").wrappers) == 1
        assert [m.name for m in app.compiled(app.commands["fetch"]).middleware] == ["opentelemetry"]


async def test_saga_steps_are_spans_inside_the_run(wisp_project, exporter) -> None:
    from wisp.plugins.sagas.api import Saga

    order = Saga("order")
    tries: list[int] = []

    @order.step("reserve", attempts=2)
    async def reserve(step: Any) -> str:
        tries.append(step.attempt)
        if len(tries) == 1:
            raise RuntimeError("stock service hiccup")
        return "r1"

    @order.step("charge")
    async def charge(step: Any) -> str:
        CALLS.clear()
        return await step.ctx.service("resilience").policy("api").call(outbound, 0)

    class Sagas:
        @wisp.hookimpl
        def wisp_sagas(self) -> list[Any]:
            return [order]

    db = wisp_project.root / "sagas.sqlite3"
    app = make_app(
        wisp_project,
        exporter,
        f'[storage]\nurl = "sqlite+aiosqlite:///{db}"\nauto_migrate = true\n'
        "[sagas]\nbackoff_seconds = 0.01\nmax_backoff_seconds = 0.02\n",
        plugins=("storage", "sagas", "resilience", "retry", "opentelemetry"),
    )
    app.register(Sagas(), "sagas-of-test")
    async with app:
        sagas = app.services.get("sagas")
        run_id = await sagas.start("order", {"sku": "A1"})
        run = await sagas.wait(run_id)
    assert run.status.value == "completed"
    spans = [
        s for s in exporter.get_finished_spans() if s.attributes.get("wisp.request_id") == run_id
    ]
    names = [s.name for s in spans]
    assert names.count("saga step order.reserve") == 2
    first, second = [s for s in spans if s.name == "saga step order.reserve"]
    assert first.status.status_code is StatusCode.ERROR  # the attempt that failed
    assert first.attributes["wisp.saga.outcome"] == "retrying"
    assert second.status.status_code is StatusCode.UNSET
    (step,) = [s for s in spans if s.name == "saga step order.charge"]
    (call,) = [s for s in spans if s.name == "resilience api"]
    (invocation,) = [s for s in spans if s.attributes.get("wisp.invocation.type") == "saga"]
    assert call.parent.span_id == step.context.span_id  # the step was current
    assert step.parent.span_id == invocation.context.span_id
    assert first.parent.span_id == invocation.context.span_id
