"""The webhook log sink, through the offline driver: the fake Discord records
each webhook execution, so the tests read what a channel would show."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from loguru import logger

from wisp.errors import ConfigError
from wisp.logs import use_patcher
from wisp.plugins.discord.fake import FakeDiscord, FakeWebhook, RecordedCall
from wisp.plugins.discord.offline import OfflineDriver, offline_guild
from wisp.plugins.logconfig import stdlib
from wisp.plugins.webhooklog.service import EMBED_TOTAL, Entry, RateWindow, pack

pytestmark = pytest.mark.needs_plugin("webhooklog")

BOT = """
import asyncio
from loguru import logger
import wisp


@wisp.command(description="Log errors, then answer.")
async def errors(ctx, n: int = 1):
    for i in range(n):
        logger.error("failure {} of {}", i + 1, n)
    return f"logged {n}"

@wisp.command(description="Crash.")
async def crash(ctx):
    raise KeyError("the-missing-key")

@wisp.command(description="Log an error from a worker thread.")
async def threaded(ctx):
    await asyncio.to_thread(lambda: logger.error("from a thread"))
    return "done"

@wisp.command(description="Only info.")
async def calm(ctx):
    logger.info("all is well")
    logger.success("a success")
    return "calm"
"""


@pytest.fixture(autouse=True)
def _restore_patcher():
    yield
    use_patcher(None)
    stdlib.uninstall()
    logging.getLogger().setLevel(logging.WARNING)


async def start(
    project: Any, wisp_offline: Any, extra: str = "", batch: float = 0.05
) -> tuple[OfflineDriver, FakeWebhook, Any]:
    fake = FakeDiscord([offline_guild()])
    hook = fake.create_webhook(name="logs")
    project.write("bot/c.py", BOT)
    project.write(
        "wisp.toml",
        '[wisp]\ncommand_paths = ["bot"]\n'
        f'[webhooklog]\nurl = "{hook.url}"\nbatch_seconds = {batch}\n{extra}',
    )
    app = project.app(plugins=["logging", "discord", "webhooklog"])
    driver = await wisp_offline(app, fake=fake)
    return driver, hook, app.services.get("webhooklog")


def executions(fake: FakeDiscord, hook: FakeWebhook) -> list[RecordedCall]:
    return [c for c in fake.calls if c.path.startswith(f"/webhooks/{hook.id}/")]


async def until(check: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


@pytest.mark.needs_plugin("discord", "logging")
async def test_errors_delivered_batched_with_their_fields(project, wisp_offline):
    driver, hook, service = await start(project, wisp_offline)
    exchange = await driver.slash("errors", {"n": 3})
    assert exchange.replies == ["logged 3"]
    await until(lambda: service.stats.sent == 3)
    (call,) = executions(driver.fake, hook)
    assert call.status == 200
    assert call.json["username"] == "wisp logs"
    assert call.json["allowed_mentions"] == {"parse": []}
    embeds = call.json["embeds"]
    assert [e["description"] for e in embeds] == [
        "failure 1 of 3",
        "failure 2 of 3",
        "failure 3 of 3",
    ]
    request_id = exchange.outcomes[0].request_id
    for e in embeds:
        assert e["title"] == "ERROR bot.c"
        assert f"request_id={request_id}" in e["footer"]["text"]
        assert "command=errors" in e["footer"]["text"]
    # The channel shows the message, authored by the webhook.
    (message,) = driver.fake.webhook_messages(hook)
    assert message["author"]["username"] == "logs"
    assert len(message["embeds"]) == 3


@pytest.mark.needs_plugin("discord", "logging")
async def test_lower_levels_stay_out_unless_configured(project, wisp_offline):
    driver, hook, service = await start(project, wisp_offline, 'also = ["SUCCESS"]\n')
    assert (await driver.slash("calm")).replies == ["calm"]
    await until(lambda: service.stats.sent == 1)
    (call,) = executions(driver.fake, hook)
    assert [e["title"] for e in call.json["embeds"]] == ["SUCCESS bot.c"]
    assert "all is well" not in str(call.json)


@pytest.mark.needs_plugin("discord", "logging")
async def test_unexpected_error_with_traceback_and_no_secrets(project, wisp_offline, monkeypatch):
    monkeypatch.setenv("DISCORD_TOKEN", "MTAxMjM0NTY3ODkwMTIzNDU2Nzg5.GxYzAb.c2VjcmV0LXBhcnQtb2Y")
    driver, hook, service = await start(project, wisp_offline)
    await driver.slash("crash")
    await until(lambda: service.stats.sent >= 1)
    text = str([c.json for c in executions(driver.fake, hook)])
    assert "KeyError" in text and "the-missing-key" in text
    assert hook.token not in text


@pytest.mark.needs_plugin("discord", "logging")
async def test_full_queue_drops_and_counts_and_never_blocks(project, wisp_offline):
    driver, hook, service = await start(project, wisp_offline, "max_queue = 4\n")
    # Discord is slow today: every execution waits until we let it through.
    gate = asyncio.Event()
    real = driver.fake._execute_webhook

    async def slow(*args: Any) -> Any:
        await gate.wait()
        return await real(*args)

    driver.fake._execute_webhook = slow  # type: ignore[method-assign]
    exchange = await driver.slash("errors", {"n": 2})
    await until(lambda: not service.queue)  # the first batch is on its way, and stuck
    # The command answers while the sink cannot deliver: nothing waits for Discord.
    exchange = await driver.slash("errors", {"n": 10})
    assert exchange.replies == ["logged 10"]
    assert service.stats.dropped == 6
    assert len(service.queue) == 4
    gate.set()
    await until(lambda: service.stats.sent == 6)
    bodies = [e["description"] for c in executions(driver.fake, hook) for e in c.json["embeds"]]
    assert bodies[2].startswith("(6 record(s) dropped: the sink fell behind)\n")
    health = await service.health()
    assert health.ok
    assert "sent 6 record(s) in 2 message(s), dropped 6" in health.detail


@pytest.mark.needs_plugin("discord", "logging")
async def test_gone_webhook_turns_the_sink_off(project, wisp_offline, log_lines):
    driver, hook, service = await start(project, wisp_offline)
    del driver.fake.webhooks[hook.id]  # deleted in Discord; the route answers 404 now
    await driver.slash("errors", {"n": 1})
    await until(lambda: service.disabled is not None)
    health = await service.health()
    assert not health.ok and "404" in health.detail
    assert (await service.ready()).ok  # no reason to take the bot out of service
    assert any("webhook log sink is off" in r["message"] for r in log_lines)
    assert (await driver.slash("errors", {"n": 2})).replies == ["logged 2"]
    assert service.stats.dropped == 2


@pytest.mark.needs_plugin("discord", "logging")
async def test_queued_records_delivered_on_stop(project, wisp_offline):
    driver, hook, service = await start(project, wisp_offline, batch=30)
    await driver.slash("errors", {"n": 2})
    assert service.stats.sent == 0  # waiting for company
    await driver.app.stop()
    assert service.stats.sent == 2
    assert len(executions(driver.fake, hook)) == 1


async def test_off_without_url_and_blockable(project):
    project.write("wisp.toml", "[webhooklog]\n")
    app = project.app(plugins=["webhooklog"])
    await app.start()
    assert "webhooklog" not in app.services
    await app.stop()
    blocked = project.app(plugins=["webhooklog"], block=["webhooklog"])
    blocked.configure()
    assert not blocked.pluginmanager.has_plugin("webhooklog")


def test_bad_config_names_the_key_and_hides_the_url(project):
    project.write(
        "wisp.toml",
        '[webhooklog]\nurl = "https://example.com/hook/secret-token-here"\n'
        'max_embeds = 11\nper_minute = 60\nalso = ["LOUD"]\n',
    )
    with pytest.raises(ConfigError) as info:
        project.app(plugins=["webhooklog"]).configure()
    text = str(info.value)
    for key in ("url", "max_embeds", "per_minute", "also"):
        assert f"webhooklog.{key}: " in text
    assert "secret-token-here" not in text


def test_rate_window_keeps_within_discords_limits():
    now = [0.0]
    window = RateWindow([(5, 2.0), (25, 60.0)], clock=lambda: now[0])
    sent = []
    while now[0] < 120:
        delay = window.delay()
        if delay > 0:
            now[0] += delay
            continue
        window.record()
        sent.append(now[0])
        now[0] += 0.01
    for i, t in enumerate(sent):
        assert sum(t <= u < t + 2.0 for u in sent[i:]) <= 5
        assert sum(t <= u < t + 60.0 for u in sent[i:]) <= 25
    assert len(sent) == 50  # and no slower than that: two full minutes


def test_pack_stays_within_embed_limits():
    fields = (("request_id", "f" * 32), ("command", "roll"), ("guild_id", "1" * 19))
    tb = "Traceback (most recent call last):\n" + "  frame\n" * 3000 + "LastError: boom"
    big = [Entry("ERROR", "x" * 300, "m" * 5000, 0.0, tb, fields) for _ in range(10)]
    embeds = pack(big, dropped=3)
    assert 1 <= len(embeds) <= 10
    total = sum(
        len(e["title"]) + len(e["description"]) + len(e.get("footer", {}).get("text", ""))
        for e in embeds
    )
    assert total <= EMBED_TOTAL
    assert all(len(e["title"]) <= 256 and len(e["description"]) <= 4096 for e in embeds)
    assert embeds[0]["description"].startswith("(3 record(s) dropped")
    # One record alone: its message, and the end of its traceback.
    (alone,) = pack([Entry("ERROR", "app", "it failed", 0.0, tb, fields)])
    assert alone["description"].startswith("it failed\n```\n")
    assert alone["description"].endswith("LastError: boom\n```")
    assert len(alone["description"]) + len(alone["title"]) + len(alone["footer"]["text"]) <= 6000
    small = [Entry("ERROR", "app", f"line {i}", 0.0) for i in range(10)]
    assert len(pack(small)) == 10


@pytest.mark.needs_plugin("discord", "logging")
async def test_stdlib_error_records_are_delivered(project, wisp_offline):
    driver, hook, service = await start(project, wisp_offline)
    # As `wisp run` does (an app built in a test leaves stdlib logging alone).
    stdlib.install({}, "INFO")
    logging.getLogger("some.library").error("library failed: %s", "disk full")
    await until(lambda: service.stats.sent == 1)
    (call,) = executions(driver.fake, hook)
    assert call.json["embeds"][0]["title"] == "ERROR some.library"
    assert call.json["embeds"][0]["description"] == "library failed: disk full"


@pytest.mark.needs_plugin("discord", "logging")
async def test_sink_logging_itself_does_not_loop(project, wisp_offline, log_lines):
    driver, hook, service = await start(project, wisp_offline)
    logger.bind(webhooklog_skip=True).error("about the sink itself")
    await driver.slash("errors", {"n": 1})
    await until(lambda: service.stats.sent == 1)
    assert "about the sink itself" not in str([c.json for c in executions(driver.fake, hook)])


async def test_fake_webhook_checks_token_and_content():
    import aiohttp
    import discord

    from wisp.plugins.discord.fake import patched_endpoints

    async with FakeDiscord([offline_guild()]) as fake:
        hook = fake.create_webhook()
        with patched_endpoints(fake):
            async with aiohttp.ClientSession() as session:
                good = discord.Webhook.from_url(hook.url, session=session)
                sent = await good.send("hello", wait=True)
                assert sent.content == "hello"
                assert sent.webhook_id == hook.id
                bad = discord.Webhook.partial(hook.id, "x" * 68, session=session)
                with pytest.raises(discord.HTTPException) as info:
                    await bad.send("hello")
                assert info.value.status == 401
                with pytest.raises(discord.HTTPException) as info:
                    await good.send("x" * 2001)
                assert info.value.status == 400
    assert [c.status for c in fake.calls if c.path.startswith("/webhooks/")] == [200, 401, 400]
    assert [m["content"] for m in fake.webhook_messages(hook)] == ["hello"]


@pytest.mark.needs_plugin("discord", "logging")
async def test_records_from_other_threads(project, wisp_offline):
    driver, hook, service = await start(project, wisp_offline)
    exchange = await driver.slash("threaded")
    await until(lambda: service.stats.sent == 1)
    (call,) = executions(driver.fake, hook)
    (embed,) = call.json["embeds"]
    assert embed["description"] == "from a thread"
    # asyncio.to_thread copies the context: the thread's line is the command's.
    assert f"request_id={exchange.outcomes[0].request_id}" in embed["footer"]["text"]
