"""wisp-sentry through the offline driver, with a transport that records
what would have been sent (no network)."""

from __future__ import annotations

from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.transport import Transport

import wisp
from wisp.errors import ConfigError

DSN = "https://0123456789abcdef0123456789abcdef@sentry.example.invalid/42"
TOKEN = "MTAxMjM0NTY3ODkwMTIzNDU2Nzg5.GxYzAb.c2VjcmV0LXBhcnQtb2YtdGhlLXRva2Vu"

BOT = f"""
from loguru import logger
import wisp

@wisp.command(description="Fail.")
async def boom(ctx):
    logger.info("about to fail in {{}}", ctx.name)
    logger.warning("it will not end well")
    raise RuntimeError("the database said no to {TOKEN}")

@wisp.command(description="Refuse.")
async def nope(ctx):
    raise wisp.UserError("not today")

@wisp.command(description="Fine.")
async def fine(ctx):
    logger.info("fine line")
    return "fine"

@wisp.event_handler("message")
async def on_message(ctx, message):
    if message.content == "explode":
        raise ValueError("event failed")

@wisp.job("crunch")
async def crunch(ctx, payload):
    raise ZeroDivisionError("job failed")
"""


class Recorder(Transport):
    """Keeps every envelope instead of sending it."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.envelopes: list[Any] = []

    def capture_envelope(self, envelope: Any) -> None:
        self.envelopes.append(envelope)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [
            item.payload.json
            for envelope in self.envelopes
            for item in envelope.items
            if item.type == "event"
        ]


class RecordingPlugin:
    def __init__(self) -> None:
        self.transport = Recorder()

    @wisp.hookimpl
    def wisp_sentry_options(self, app: wisp.Wisp) -> dict[str, Any]:
        return {"transport": self.transport}


def make_app(wisp_project: Any, config: str = f'[sentry]\ndsn = "{DSN}"\n') -> tuple[Any, Recorder]:
    wisp_project.write("bot/c.py", BOT)
    wisp_project.write(
        "wisp.toml",
        f'[wisp]\ncommand_paths = ["bot"]\n[discord]\ntoken = "{TOKEN}"\n{config}',
    )
    app = wisp_project.app(plugins=["discord", "logging", "sentry"])
    plugin = RecordingPlugin()
    app.register(plugin, "recorder")
    return app, plugin.transport


async def test_unexpected_error_with_tags_and_breadcrumbs(wisp_project, wisp_offline):
    app, transport = make_app(wisp_project)
    bot = await wisp_offline(app)
    await bot.slash("fine")
    exchange = await bot.slash("boom")
    request_id = exchange.outcomes[0].request_id
    assert isinstance(exchange.outcomes[0].error, RuntimeError)
    sentry_sdk.flush()
    (event,) = transport.events
    assert event["tags"]["request_id"] == request_id
    assert event["tags"]["command"] == "boom"
    assert event["tags"]["invocation"] == "slash"
    assert event["tags"]["guild"] == str(bot.fake.default_guild.id)
    (exc,) = event["exception"]["values"]
    assert exc["type"] == "RuntimeError"
    crumbs = event["breadcrumbs"]["values"]
    messages = [c["message"] for c in crumbs]
    # The invocation, then its own lines, and nothing of the command before it.
    assert messages[-3:] == ["slash boom", "about to fail in boom", "it will not end well"]
    assert "fine line" not in messages
    assert crumbs[-3]["data"]["request_id"] == request_id
    assert crumbs[-1]["level"] == "warning"


async def test_secrets_never_leave(wisp_project, wisp_offline):
    app, transport = make_app(wisp_project)
    bot = await wisp_offline(app)
    await bot.slash("boom")
    sentry_sdk.flush()
    (event,) = transport.events
    text = repr(event)
    assert "the database said no to ***" in text
    assert TOKEN not in text
    assert "0123456789abcdef0123456789abcdef" not in text


async def test_user_errors_are_not_bugs(wisp_project, wisp_offline):
    app, transport = make_app(wisp_project)
    bot = await wisp_offline(app)
    exchange = await bot.slash("nope")
    assert any("not today" in r for r in exchange.replies)
    sentry_sdk.flush()
    assert transport.events == []


async def test_events_and_jobs_too(wisp_project, wisp_offline):
    app, transport = make_app(wisp_project)
    bot = await wisp_offline(app)
    await bot.say("explode")
    outcome = await app.run_job("crunch", {}, job_id="job-1", guild_id=7)
    assert isinstance(outcome.error, ZeroDivisionError)
    sentry_sdk.flush()
    by_type = {e["exception"]["values"][0]["type"]: e for e in transport.events}
    assert by_type["ValueError"]["tags"]["event"] == "message"
    assert by_type["ValueError"]["tags"]["invocation"] == "event"
    job = by_type["ZeroDivisionError"]
    assert job["tags"]["job"] == "crunch"
    assert job["tags"]["guild"] == "7"
    crumb = next(c for c in job["breadcrumbs"]["values"] if c["category"] == "wisp.invocation")
    assert crumb["data"]["job_id"] == "job-1"


async def test_off_without_dsn(wisp_project):
    app, _ = make_app(wisp_project, config="")
    await app.start()
    try:
        assert "sentry" not in app.services
        assert not sentry_sdk.get_client().is_active()
        mws = [m.name for m in app.compiled(app.commands["boom"]).middleware]
        assert "sentry" not in mws
    finally:
        await app.stop()


async def test_dsn_from_environment_and_stop_closes(wisp_project):
    wisp_project.write("bot/c.py", BOT)
    app = wisp_project.app(plugins=["sentry"], env={"SENTRY_DSN": DSN})
    plugin = RecordingPlugin()
    app.register(plugin, "recorder")
    await app.start()
    assert (await app.services.get("sentry").health()).ok
    await app.stop()
    assert not sentry_sdk.get_client().is_active()


def test_bad_dsn_is_named_and_not_echoed(wisp_project):
    wisp_project.write("wisp.toml", '[sentry]\ndsn = "not-a-dsn-secretvalue"\nsample_rate = 2\n')
    with pytest.raises(ConfigError) as info:
        wisp_project.app(plugins=["sentry"]).configure()
    text = str(info.value)
    assert "sentry.dsn: is not a Sentry DSN" in text
    assert "sentry.sample_rate: must be between 0 and 1" in text
    assert "secretvalue" not in text


def test_blockable(wisp_project):
    app = wisp_project.app(plugins=["sentry"], block=["sentry"])
    app.configure()
    assert not app.pluginmanager.has_plugin("sentry")
