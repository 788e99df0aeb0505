from __future__ import annotations

from typing import Literal

import pytest

import wisp
from wisp import Middleware, Order


def recorder(name: str, trail: list[str], order: int = Order.DEFAULT) -> Middleware:
    async def mw(ctx, call_next):
        trail.append(f"{name}>")
        try:
            return await call_next(ctx)
        finally:
            trail.append(f"<{name}")

    return Middleware(name, mw, order)


@wisp.command()
async def echo(ctx: wisp.WispContext, text: str = "hi") -> str:
    ctx.stash[TRAIL].append("handler")
    return text


TRAIL = wisp.StashKey[list]()


async def test_empty_pipeline_runs_the_handler_with_nothing_loaded(project) -> None:
    app = project.app()  # autoload off, no plugins at all
    app.register(type("P", (), {"wisp_commands": wisp.hookimpl(lambda self: [echo])})(), "p")
    app.configure()
    assert app.pluginmanager.plugins()[0].name == "p"
    assert app.compiled(app.commands["echo"]).middleware == ()
    ctx = await app.make_context(
        wisp.InvocationType.CLI, "echo", target=app.commands["echo"], options={"text": "x"}
    )
    ctx.stash[TRAIL] = []
    outcome = await app.invoke(ctx)
    assert outcome.ok and outcome.response.content == "x"
    assert ctx.stash[TRAIL] == ["handler"]


async def test_middleware_sorted_by_order_then_hook_call_order(project) -> None:
    trail: list[str] = []

    class Early:
        @wisp.hookimpl(tryfirst=True)
        def wisp_middleware(self, target):
            return [recorder("policy", trail, Order.POLICY), recorder("tie-a", trail)]

    class Late:
        @wisp.hookimpl
        def wisp_middleware(self, app, target):
            return (recorder("observe", trail, Order.OBSERVE), recorder("tie-b", trail))

        @wisp.hookimpl
        def wisp_commands(self):
            return [echo]

    app = project.app()
    app.register(Early(), "early")
    app.register(Late(), "late")
    app.configure()
    compiled = app.compiled(app.commands["echo"])
    assert [m.name for m in compiled.middleware] == ["observe", "policy", "tie-a", "tie-b"]
    assert [m.plugin for m in compiled.middleware] == ["late", "early", "early", "late"]
    ctx = await app.make_context(
        wisp.InvocationType.CLI, "echo", target=app.commands["echo"], options={"text": "y"}
    )
    ctx.stash[TRAIL] = trail
    assert (await app.invoke(ctx)).response.content == "y"
    assert trail == [
        "observe>",
        "policy>",
        "tie-a>",
        "tie-b>",
        "handler",
        "<tie-b",
        "<tie-a",
        "<policy",
        "<observe",
    ]


async def test_middleware_can_short_circuit_and_see_the_target(project) -> None:
    async def deny(ctx, call_next):
        if ctx.target.metadata.get("capability") == "admin":
            raise wisp.PermissionDenied(capability="admin")
        return await call_next(ctx)

    @wisp.command(capability="admin")
    async def secret(ctx) -> str:
        raise AssertionError("handler must not run")

    class P:
        @wisp.hookimpl
        def wisp_middleware(self, target):
            # Only commands that need a capability pay for this middleware.
            return Middleware("deny", deny, Order.POLICY) if target.metadata else None

        @wisp.hookimpl
        def wisp_commands(self):
            return [secret, echo]

    app = project.app()
    app.register(P(), "p")
    app.configure()
    assert app.compiled(app.commands["echo"]).middleware == ()
    out = await app.call("secret")
    assert not out.ok
    assert isinstance(out.error, wisp.PermissionDenied)
    assert out.response.content == "You are not allowed to do that."
    assert out.response.ephemeral


async def test_unexpected_error_is_logged_with_request_id_and_hidden(project, log_lines) -> None:
    @wisp.command()
    async def boom(ctx) -> str:
        raise RuntimeError("database password is hunter2")

    app = project.app()
    app.register(type("P", (), {"wisp_commands": wisp.hookimpl(lambda self: [boom])})(), "p")
    app.configure()
    out = await app.call("boom")
    assert isinstance(out.error, RuntimeError)
    assert "hunter2" not in out.response.content
    assert out.request_id in out.response.content
    errors = [r for r in log_lines if r["level"] == "ERROR"]
    assert errors and errors[0]["extra"]["request_id"] == out.request_id
    assert errors[0]["exception"] is not None


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (wisp.UserError("Pick a number from 1 to 10."), "Pick a number from 1 to 10."),
        (wisp.NotFound(), "Not found."),
        (wisp.RateLimited(2.5), "Slow down: try again in 2.5s."),
        (
            wisp.ExternalServiceError(),
            "A service this command needs is unavailable right now. Try again later.",
        ),
    ],
)
async def test_wisp_errors_show_their_safe_message(project, exc, message) -> None:
    @wisp.command()
    async def fail(ctx) -> str:
        raise exc

    app = project.app()
    app.register(type("P", (), {"wisp_commands": wisp.hookimpl(lambda self: [fail])})(), "p")
    app.configure()
    out = await app.call("fail")
    assert out.error is exc
    assert out.response.content == message


async def test_error_message_hook_overrides_and_a_broken_one_falls_back(project) -> None:
    @wisp.command()
    async def fail(ctx) -> str:
        raise wisp.NotFound()

    class Override:
        @wisp.hookimpl
        async def wisp_error_message(self, ctx, error):
            return f"custom: {type(error).__name__}" if ctx.name == "fail" else None

        @wisp.hookimpl
        def wisp_commands(self):
            return [fail, echo]

    class Broken:
        @wisp.hookimpl(tryfirst=True)
        def wisp_error_message(self, error):
            raise ValueError("mapper bug")

    app = project.app()
    app.register(Override(), "override")
    app.configure()
    assert (await app.call("fail")).response.content == "custom: NotFound"

    app2 = project.app()
    app2.register(Override(), "override")
    app2.register(Broken(), "broken")
    app2.configure()
    assert (await app2.call("fail")).response.content == "Not found."


async def test_bad_options_are_user_errors(project) -> None:
    @wisp.command()
    async def add(ctx, a: int, b: int = 2, mode: Literal["x", "y"] = "x") -> str:
        return str(a + b)

    app = project.app()
    app.register(type("P", (), {"wisp_commands": wisp.hookimpl(lambda self: [add])})(), "p")
    app.configure()
    assert (await app.call("add", {"a": "40"})).response.content == "42"
    for options, fragment in [
        ({}, "`a` is required"),
        ({"a": "x"}, "whole number"),
        ({"a": 1, "c": 2}, "Unknown option"),
        ({"a": 1, "mode": "z"}, "one of"),
    ]:
        out = await app.call("add", options)
        assert isinstance(out.error, wisp.UserError), options
        assert fragment in out.response.content


def test_sync_middleware_and_handlers_are_rejected_at_definition() -> None:
    def sync_mw(ctx, call_next):
        return call_next(ctx)

    with pytest.raises(TypeError, match="must be an async function"):
        Middleware("sync", sync_mw)

    with pytest.raises(TypeError, match="must be an async function"):
        wisp.command()(lambda ctx: "x")

    class AsyncCallable:
        async def __call__(self, ctx, call_next):
            return await call_next(ctx)

    assert Middleware("obj", AsyncCallable()).name == "obj"


async def test_async_callable_object_middleware_runs(project) -> None:
    class Counter:
        calls = 0

        async def __call__(self, ctx, nxt):  # not named call_next: still works
            Counter.calls += 1
            return await nxt(ctx)

    class P:
        @wisp.hookimpl
        def wisp_middleware(self):
            return Middleware("count", Counter())

        @wisp.hookimpl
        def wisp_commands(self):
            return [echo]

    app = project.app()
    app.register(P(), "p")
    app.configure()
    ctx = await app.make_context(
        wisp.InvocationType.CLI, "echo", target=app.commands["echo"], options={"text": "z"}
    )
    ctx.stash[TRAIL] = []
    assert (await app.invoke(ctx)).response.content == "z"
    assert Counter.calls == 1


async def test_policy_hook_decides_and_abstention_grants(project) -> None:
    class Policy:
        @wisp.hookimpl
        def wisp_policy_decide(self, ctx, capability):
            if capability.startswith("admin."):
                return wisp.Decision.deny("admins only", source="test")
            return None

        @wisp.hookimpl
        def wisp_commands(self):
            return [echo]

    app = project.app()
    # Not "policy": that name is the bundled plugin's (blocked in tests(without=policy)).
    app.register(Policy(), "test-policy")
    app.configure()
    ctx = await app.make_context(wisp.InvocationType.CLI, "echo", target=app.commands["echo"])
    assert (await app.decide(ctx, "fun.roll")).allowed
    denied = await app.decide(ctx, "admin.ban")
    assert not denied.allowed and denied.reason == "admins only"
    with pytest.raises(wisp.PermissionDenied) as info:
        await app.require(ctx, "admin.ban")
    assert info.value.capability == "admin.ban"
    assert "`admin.ban`" in info.value.safe_message and "admins only" in info.value.safe_message
    await app.require(ctx, "fun.roll")


def test_runtime_hooks_reject_pluggy_wrappers(project) -> None:
    class Wrapper:
        @wisp.hookimpl(wrapper=True)
        def wisp_error_message(self, ctx, error):
            return (yield)

    app = project.app()
    app.register(Wrapper(), "wrapper")
    app.bootstrap()
    [failure] = app.pluginmanager.failures
    assert failure.name == "wrapper"
    assert "cannot wrap coroutines" in failure.message
    assert "wrapper" not in [p.name for p in app.pluginmanager.plugins()]


async def test_enrich_context_runs_before_middleware(project) -> None:
    key = wisp.StashKey[str]()

    class P:
        @wisp.hookimpl
        async def wisp_enrich_context(self, ctx):
            ctx.stash[key] = "enriched"

        @wisp.hookimpl
        def wisp_commands(self):
            @wisp.command()
            async def show(ctx) -> str:
                return ctx.stash[key]

            return [show]

    app = project.app()
    app.register(P(), "p")
    app.configure()
    assert (await app.call("show")).response.content == "enriched"


async def test_emit_runs_handlers_in_priority_order_and_isolates_errors(project, log_lines):
    seen: list[str] = []

    @wisp.event_handler("member_join", priority=10)
    async def first(ctx, member_id: int) -> None:
        seen.append(f"first {member_id} guild={ctx.guild_id}")

    @wisp.event_handler("member_join", priority=5)
    async def broken(ctx, member_id: int) -> None:
        raise RuntimeError("welcome channel missing")

    @wisp.event_handler("member_join", priority=20)
    async def last(ctx, member_id: int) -> None:
        seen.append(f"last {ctx.invocation_type}")

    class P:
        @wisp.hookimpl
        def wisp_event_handlers(self):
            return [last, first, broken]

    app = project.app()
    app.register(P(), "p")
    app.configure()
    assert [h.handler.__name__ for h in app.handlers_for("member_join")] == [
        "broken",
        "first",
        "last",
    ]
    outcomes = await app.emit("member_join", {"member_id": 7}, guild_id=3)
    assert [o.ok for o in outcomes] == [False, True, True]
    assert seen == ["first 7 guild=3", "last event"]
    [error] = [r for r in log_lines if r["level"] == "ERROR"]
    assert error["extra"]["request_id"] == outcomes[0].request_id
    assert await app.emit("nobody_listens") == []
