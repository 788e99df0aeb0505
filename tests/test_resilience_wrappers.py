"""``wisp_resilience_wrappers``: code around every call through a policy,
collected once, outermost, and no extra layer when nobody asks."""

from __future__ import annotations

from typing import Any

import pytest

import wisp

pytestmark = pytest.mark.needs_plugin("resilience")

SEEN: list[str] = []

TOML = """
[wisp]
autoload = false
plugins = ["resilience", "retry"]

[[resilience.policies.api]]
pattern = "retry"
attempts = 2
backoff = 0
"""


class Wrappers:
    @wisp.hookimpl
    def wisp_resilience_wrappers(self, app: wisp.Wisp) -> list[Any]:
        def named(tag: str) -> Any:
            def wrap(policy: Any, call: Any) -> Any:
                async def wrapped(*args: Any, **kwargs: Any) -> Any:
                    SEEN.append(f"{tag}>{policy.name}")
                    try:
                        return await call(*args, **kwargs)
                    finally:
                        SEEN.append(f"{tag}<")

                return wrapped

            return wrap

        return [named("outer"), named("inner")]


@wisp.command(resilience="api")
async def guarded(ctx: wisp.WispContext) -> str:
    SEEN.append("handler")
    return "ok"


class Commands:
    @wisp.hookimpl
    def wisp_commands(self) -> list[wisp.Command]:
        return [guarded]


async def flaky(calls: list[int]) -> str:
    calls.append(1)
    SEEN.append(f"attempt {len(calls)}")
    if len(calls) == 1:
        raise ConnectionError("once")
    return "data"


@pytest.mark.needs_plugin("retry")
async def test_wrappers_surround_every_kind_of_call_once(project) -> None:
    project.write("wisp.toml", TOML)
    app = project.app(autoload=None)
    app.register(Wrappers(), "wrappers")
    app.register(Commands(), "commands")
    SEEN.clear()
    async with app:
        policy = app.services.get("resilience").policy("api")
        assert len(policy.wrappers) == 2
        assert await policy.call(flaky, []) == "data"
        assert SEEN == ["outer>api", "inner>api", "attempt 1", "attempt 2", "inner<", "outer<"]
        SEEN.clear()
        decorated = policy(flaky)
        assert await decorated([]) == "data"
        assert SEEN[:2] == ["outer>api", "inner>api"]
        SEEN.clear()
        assert (await app.call("guarded")).ok
        assert SEEN == ["outer>api", "inner>api", "handler", "inner<", "outer<"]


@pytest.mark.needs_plugin("retry")
async def test_no_wrappers_bind_the_same_chain(project) -> None:
    project.write("wisp.toml", TOML)
    app = project.app(autoload=None)
    async with app:
        policy = app.services.get("resilience").policy("api")
        assert policy.wrappers == ()

        async def inner() -> None:
            return None

        (retry,) = policy.patterns
        # Nothing between the policy and its patterns: the same bound function shape.
        assert type(policy.bind(inner)) is type(retry.bind(inner))
        assert policy.bind(inner).__qualname__ == retry.bind(inner).__qualname__


@pytest.mark.needs_plugin("retry")
async def test_a_bad_wrapper_is_named(project) -> None:
    project.write("wisp.toml", TOML)

    class Bad:
        @wisp.hookimpl
        def wisp_resilience_wrappers(self) -> list[Any]:
            return ["not callable"]

    app = project.app(autoload=None)
    app.register(Bad(), "bad")
    with pytest.raises(wisp.ConfigError, match="plugin 'bad' returned 'not callable' from wisp_"):
        app.configure()
