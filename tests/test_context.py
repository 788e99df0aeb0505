from __future__ import annotations

import asyncio
import re
import time

import pytest

import wisp
from wisp.context import current_context
from wisp.requestid import new_request_id, request_id_time


def test_request_ids_are_unique_and_sort_by_time() -> None:
    ids = [new_request_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids[:100])
    earlier = new_request_id()
    time.sleep(0.002)
    assert new_request_id() > earlier
    assert abs(request_id_time(earlier) - time.time()) < 5


def test_stash_is_typed_per_key() -> None:
    a = wisp.StashKey[int]()
    b = wisp.StashKey[str]()
    stash = wisp.Stash()
    stash[a] = 1
    assert stash[a] == 1
    assert b not in stash
    assert stash.get(b, "x") == "x"
    assert stash.setdefault(b, "y") == "y"
    assert len(stash) == 2
    del stash[a]
    with pytest.raises(KeyError):
        stash[a]


async def test_context_is_current_in_awaited_code_and_logs_carry_request_id(
    project, log_lines
) -> None:
    seen = {}

    async def deep() -> None:
        await asyncio.sleep(0)
        seen["ctx"] = current_context()
        from loguru import logger

        logger.info("from deep inside")

    @wisp.command()
    async def probe(ctx: wisp.WispContext) -> str:
        await deep()
        ctx.logger.info("from the handler")
        return ctx.request_id

    class Plugin:
        @wisp.hookimpl
        def wisp_commands(self):
            return [probe]

    app = project.app()
    app.register(Plugin(), "probe")
    app.configure()
    outcome = await app.call("probe")
    assert outcome.ok
    rid = outcome.response.content
    assert seen["ctx"].request_id == rid == outcome.request_id
    assert current_context() is None
    lines = {r["message"]: r["extra"].get("request_id") for r in log_lines}
    assert lines["from deep inside"] == rid
    assert lines["from the handler"] == rid


async def test_context_fields_and_lazy_services(project) -> None:
    class Svc(wisp.BaseService):
        name = "clock"

    class Plugin:
        @wisp.hookimpl
        def wisp_services(self):
            return Svc()

    app = project.app()
    app.register(Plugin(), "p")
    async with app:
        ctx = await app.make_context(
            wisp.InvocationType.SLASH, "x", guild_id=1, channel_id=2, user_id=3
        )
        assert (ctx.guild_id, ctx.channel_id, ctx.user_id) == (1, 2, 3)
        assert ctx.invocation_type == "slash"
        assert isinstance(ctx.service("clock"), Svc)
        assert ctx.service_of(Svc) is ctx.service("clock")
        with pytest.raises(KeyError, match="no service 'nope'"):
            ctx.service("nope")
