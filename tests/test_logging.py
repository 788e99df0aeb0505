"""The logging plugin: invocation fields on every record, JSON lines, stdlib
routing, levels per logger, and secrets that never reach a line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from collections import defaultdict
from typing import Any

import pytest
from loguru import logger

import wisp
from wisp.errors import ConfigError
from wisp.logs import use_patcher
from wisp.plugins.logconfig.api import REDACTED, Redactor, configure_logging
from wisp.plugins.logconfig.records import secrets_of
from wisp.plugins.logconfig.stdlib import ToLoguru

#: Shaped like a real bot token (id.timestamp.hmac); never valid anywhere.
TOKEN = "MTAxMjM0NTY3ODkwMTIzNDU2Nzg5.GxYzAb.c2VjcmV0LXBhcnQtb2YtdGhlLXRva2VuLTEyMw"
WEBHOOK_TOKEN = "wHtOkEn-" + "x" * 60
WEBHOOK_URL = f"https://discord.com/api/webhooks/123456789012345678/{WEBHOOK_TOKEN}"

BOT = """
import asyncio
import logging
import os

from loguru import logger

import wisp

stdlib = logging.getLogger("thirdparty.lib")


async def helper(tag):
    await asyncio.sleep(0)
    logger.info("helper for {} saw postgresql://app:hunter2secret@db:5432/bot", tag)
    stdlib.warning("stdlib line in %s, token=%s", tag, os.environ["DISCORD_TOKEN"])


@wisp.command(description="Log, then queue a job.")
async def work(ctx: wisp.WispContext) -> str:
    await helper("work")
    await asyncio.create_task(helper("work-task"))
    ctx.logger.info("bound line with the webhook {}", os.environ["HOOK_URL"])
    await ctx.service("jobs").enqueue("crunch", {"n": 3})
    return "queued"


@wisp.command(description="Fail unexpectedly.")
async def boom(ctx: wisp.WispContext) -> str:
    token = os.environ["DISCORD_TOKEN"]
    raise RuntimeError(f"cannot reach https://user:pw-{token[:8]}@example.com token {token}")


@wisp.event_handler("message")
async def heard(ctx: wisp.WispContext, message) -> None:
    await helper("heard")
    logger.info("heard a message of {} chars", len(message.content))


@wisp.job("crunch")
async def crunch(ctx: wisp.WispContext, payload) -> int:
    await helper("crunch")
    ctx.logger.info("crunched {}", payload["n"])
    return payload["n"] * 2
"""


def _project(
    project: Any, extra: str = "", database: tuple[str, str] | None = None
) -> dict[str, str]:
    project.write("bot/work.py", BOT)
    store = f'url = "{database[0]}"\nschema = "{database[1]}"\n' if database else ""
    project.write(
        "wisp.toml",
        '[wisp]\nautoload = false\ncommand_paths = ["bot"]\nlog_format = "json"\n'
        'plugins = ["logging", "accesslog", "storage", "discord", "jobs"]\n'
        f"[storage]\nauto_migrate = true\n{store}[jobs]\npoll_seconds = 0.05\n" + extra,
    )
    return {
        **os.environ,
        "DISCORD_TOKEN": TOKEN,
        "HOOK_URL": WEBHOOK_URL,
        "WISP_LOG_LEVEL": "DEBUG",
    }


def _wisp(project: Any, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "wisp", "--rootdir", str(project.root), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return proc.returncode, proc.stdout, proc.stderr


def _script(project: Any, env: dict[str, str], text: str) -> tuple[int, str, str]:
    """``wisp run --offline`` replaying ``text``."""
    script = project.write("script.txt", text)
    return _wisp(project, env, "run", "--offline", "--script", str(script))


def _parse(stderr: str) -> list[dict[str, Any]]:
    lines = []
    for n, line in enumerate(stderr.splitlines(), 1):
        try:
            lines.append(json.loads(line))
        except ValueError:
            pytest.fail(f"stderr line {n} is not JSON: {line!r}")
    return lines


@pytest.mark.needs_plugin("logging", "accesslog", "storage", "discord", "jobs")
@pytest.mark.slow
def test_commands_event_and_job_offline_json_lines(project: Any, database: tuple[str, str]) -> None:
    """The issue's test: every line parses; each line of an invocation carries
    its request id and fields; no line carries a secret.  Jobs in SQLite and
    in PostgreSQL."""
    env = _project(project, database=database)
    _, out, err = _script(project, env, "/work\nhello bot\n/boom\n")
    assert "bot: queued" in out, (out, err)
    code2, _, err2 = _wisp(project, env, "worker", "--burst")
    assert code2 == 0, err2
    lines = _parse(err) + _parse(err2)
    assert lines
    for line in lines:
        text = json.dumps(line)
        for secret in (TOKEN, WEBHOOK_TOKEN, "hunter2secret", TOKEN[:8] + "@"):
            assert secret not in text, line
        assert {"time", "level", "logger", "message", "request_id"} <= set(line)

    by_request: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        if line["request_id"] != "-":
            by_request[line["request_id"]].append(line)

    def invocation(kind: str, name: str) -> list[dict[str, Any]]:
        found = [rs for rs in by_request.values() if any(r.get(kind) == name for r in rs)]
        assert len(found) == 1, (kind, name, list(by_request))
        return found[0]

    work = invocation("command", "work")
    # Both helper runs (awaited, and in a task), stdlib's line, the bound line, accesslog's.
    messages = [r["message"] for r in work]
    assert sum("helper for work" in m for m in messages) == 2
    assert any(m.startswith("stdlib line in work-task") for m in messages)
    assert any(r["logger"] == "thirdparty.lib" for r in work)
    assert any(f"/webhooks/123456789012345678/{REDACTED}" in m for m in messages)
    assert any("postgresql://app:***@db:5432/bot" in m for m in messages)
    for record in work:
        assert record["invocation_type"] == "slash"
        assert record["command"] == "work"
        assert record["guild_id"] and record["channel_id"] and record["user_id"]

    heard = invocation("event", "message")
    assert {r["message"] for r in heard} >= {"heard a message of 9 chars"}
    assert all(r["invocation_type"] == "event" and r["guild_id"] for r in heard)

    crunch = invocation("job", "crunch")
    assert any(r["message"] == "crunched 3" for r in crunch)
    assert any(r["logger"] == "thirdparty.lib" for r in crunch)
    assert all(r["invocation_type"] == "job" and r["job_id"] for r in crunch)
    assert len({r["job_id"] for r in crunch}) == 1

    boom = invocation("command", "boom")
    failed = [r for r in boom if r.get("exception")]
    assert failed, boom
    assert "RuntimeError" in failed[0]["exception"]
    assert REDACTED in failed[0]["exception"]


@pytest.mark.needs_plugin("logging", "discord")
@pytest.mark.slow
def test_levels_per_logger(project: Any) -> None:
    env = _project(project, '[logging]\nlevels = { "thirdparty" = "ERROR" }\n')
    _, out, err = _script(project, env, "/work\n")
    lines = _parse(err)
    assert "bot: queued" in out
    assert not [r for r in lines if r["logger"].startswith("thirdparty")]
    # The rest still logs at the global level (DEBUG here).
    assert any(r["level"] == "DEBUG" for r in lines)
    assert any(r["message"].startswith("helper for work") for r in lines)


@pytest.mark.needs_plugin("logging", "discord")
@pytest.mark.slow
def test_console_format_chosen_in_config(project: Any) -> None:
    env = _project(project, '[logging]\nformat = "console"\n')
    _, out, err = _script(project, env, "/work\n/boom\n")
    assert "bot: queued" in out
    assert not err.lstrip().startswith("{")
    assert "helper for work saw postgresql://app:***@db:5432/bot" in err
    assert "RuntimeError: cannot reach" in err  # the traceback is there ...
    assert TOKEN not in err  # ... with the secrets hidden
    assert "hunter2secret" not in err


@pytest.mark.needs_plugin("accesslog", "discord")
@pytest.mark.slow
def test_blocked_plugin_json_lines_keep_their_shape(project: Any) -> None:
    """With ``-p no:logging`` the kernel's JSON sink remains: the same keys,
    the request id, and none of the plugin's fields."""
    env = _project(project)
    script = project.write("script.txt", "/work\n")
    _, out, err = _wisp(
        project, env, "-p", "no:logging", "run", "--offline", "--script", str(script)
    )
    assert "bot: queued" in out, err
    # The stdlib line in the command is not routed: Python prints it itself.
    lines = _parse("\n".join(x for x in err.splitlines() if not x.startswith("stdlib line")))
    assert all({"time", "level", "logger", "message", "request_id"} <= set(r) for r in lines)
    access = [r for r in lines if r["logger"] == "wisp.plugins.accesslog"]
    assert access and access[0]["request_id"] != "-"
    assert not any("invocation_type" in r for r in lines)


@pytest.mark.needs_plugin("logging")
def test_bad_config_names_the_key(project: Any) -> None:
    project.write(
        "wisp.toml",
        '[logging]\nlevels = { "sqlalchemy" = "LOUD" }\nredact = ["(unclosed"]\n',
    )
    app = project.app(plugins=["logging"])
    with pytest.raises(ConfigError) as info:
        app.configure()
    text = str(info.value)
    assert "levels" in text and "'sqlalchemy'" in text and "LOUD" in text
    assert "redact" in text and "(unclosed" in text


# -- in process ---------------------------------------------------------------------


@pytest.fixture
def restore_patcher():
    yield
    use_patcher(None)
    logging.getLogger().handlers[:] = [
        h for h in logging.getLogger().handlers if type(h).__name__ != "ToLoguru"
    ]


@pytest.mark.needs_plugin("logging")
async def test_fields_in_process_from_awaited_calls_and_tasks(
    project: Any, log_lines: list[dict[str, Any]], restore_patcher: None
) -> None:
    project.write(
        "bot/c.py",
        """
        import asyncio
        from loguru import logger
        import wisp

        async def deep():
            await asyncio.sleep(0)
            logger.warning("deep down")

        @wisp.command()
        async def hi(ctx):
            await deep()
            await asyncio.gather(deep(), asyncio.create_task(deep()))
            return "hi"
        """,
    )
    project.write("wisp.toml", '[wisp]\ncommand_paths = ["bot"]\n')
    app = project.app(plugins=["logging"])
    app.configure()
    ctx = await app.make_context(
        wisp.InvocationType.PREFIX,
        "hi",
        target=app.commands["hi"],
        guild_id=1,
        channel_id=2,
        user_id=3,
    )
    outcome = await app.invoke(ctx)
    assert outcome.error is None
    deep = [r for r in log_lines if r["message"] == "deep down"]
    assert len(deep) == 3
    for r in deep:
        assert (
            r["extra"].items()
            >= {
                "request_id": ctx.request_id,
                "invocation_type": "prefix",
                "command": "hi",
                "guild_id": 1,
                "channel_id": 2,
                "user_id": 3,
            }.items()
        )
    logger.info("outside")
    assert log_lines[-1]["extra"] == {"request_id": "-"}
    await app.stop()


@pytest.mark.needs_plugin("accesslog")
async def test_blocked_plugin_leaves_request_ids(
    project: Any, log_lines: list[dict[str, Any]]
) -> None:
    project.write("bot/c.py", "import wisp\n@wisp.command()\nasync def hi(ctx):\n    return 'hi'\n")
    project.write("wisp.toml", '[wisp]\ncommand_paths = ["bot"]\n')
    app = project.app(plugins=["logging", "accesslog"], block=["logging"])
    app.configure()
    ctx = await app.make_context(wisp.InvocationType.CLI, "hi", target=app.commands["hi"])
    assert (await app.invoke(ctx)).value == "hi"
    access = [r for r in log_lines if "hi ok" in r["message"]]
    assert access and access[0]["extra"]["request_id"] == ctx.request_id
    assert "invocation_type" not in access[0]["extra"]


@pytest.mark.needs_plugin("discord", "logging", "storage")
def test_secrets_found_in_config_and_environment(project: Any) -> None:
    project.write(
        "wisp.toml",
        '[logging]\n[discord]\ntoken = "cfg-token-value"\n'
        '[storage]\nurl = "postgresql+asyncpg://bot:db-pass-word@localhost/bot"\n',
    )
    app = project.app(
        plugins=["logging", "discord", "storage"],
        env={"MY_API_KEY": "key-from-env", "HOME": "/home/someone"},
    )
    app.configure()
    found = secrets_of(app)
    assert {"cfg-token-value", "db-pass-word", "key-from-env"} <= set(found)
    assert "/home/someone" not in found


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        (f"token is {TOKEN}.", TOKEN),
        (f"POST {WEBHOOK_URL}", WEBHOOK_TOKEN),
        ("redis://:s3cr3t-pass@cache:6379/0", "s3cr3t-pass"),
        ("amqp://guest:guestpw@rabbit//", "guestpw"),
        ("Authorization: Bot abcdefghijklmnopqrstuvwxyz0123456789ABCDEF", "abcdefghijklmnop"),
        ("the value my-known-secret leaked", "my-known-secret"),
        ("custom ssn 123-45-6789", "123-45-6789"),
    ],
)
def test_redactor_hides(text: str, hidden: str) -> None:
    redactor = Redactor.build(["my-known-secret", "short"], [r"\d{3}-\d{2}-\d{4}"])
    scrubbed = redactor.scrub(text)
    assert hidden not in scrubbed
    assert REDACTED in scrubbed


def test_redactor_leaves_ordinary_text() -> None:
    redactor = Redactor.build(["abc"])  # too short to hide: it would eat ordinary words
    for text in (
        "slash ping ok in 0.21ms (guild=1 user=2)",
        "https://discord.com/channels/1/2/3",
        "see https://example.com/a.b.c?x=1 and abc",
        "sqlite+aiosqlite:///data/bot.sqlite3",
    ):
        assert redactor.scrub(text) == text


def test_configure_logging_json_and_stdlib(restore_patcher: None) -> None:
    stream = io.StringIO()
    configure_logging(
        level="INFO",
        fmt="json",
        levels={"quiet": "ERROR", "chatty": "DEBUG"},
        sink=stream,
        redactor=Redactor.build(["open-sesame"]),
    )
    try:
        logging.getLogger("chatty.x").debug("debug from chatty with open-sesame")
        logging.getLogger("quiet.y").warning("dropped")
        logging.getLogger("other").debug("dropped too")
        logging.getLogger("other").info("kept %d", 1)
        logger.bind(custom="v").info("loguru {}", "line")
        try:
            raise ValueError("bad open-sesame")
        except ValueError:
            logger.exception("failed")
    finally:
        logging.getLogger("chatty").setLevel(logging.NOTSET)
        logging.getLogger("quiet").setLevel(logging.NOTSET)
        logging.getLogger().setLevel(logging.WARNING)
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [(r["logger"], r["message"]) for r in lines] == [
        ("chatty.x", "debug from chatty with ***"),
        ("other", "kept 1"),
        (__name__, "loguru line"),
        (__name__, "failed"),
    ]
    assert lines[2]["custom"] == "v"
    assert "ValueError: bad ***" in lines[3]["exception"]
    assert "open-sesame" not in stream.getvalue()


@pytest.mark.needs_plugin("logging")
async def test_unconfigure_restores_the_kernel_patcher(
    project: Any, log_lines: list[dict[str, Any]]
) -> None:
    app = project.app(plugins=["logging"])
    app.configure()
    await app.stop()
    from wisp.context import InvocationType, WispContext, _current

    token = _current.set(WispContext(app=app, invocation_type=InvocationType.CLI, name="x"))
    try:
        logger.info("after stop")
    finally:
        _current.reset(token)
    assert set(log_lines[-1]["extra"]) == {"request_id"}


@pytest.mark.needs_plugin("logging")
async def test_many_lines_concurrently_keep_their_own_ids(
    project: Any, log_lines: list[dict[str, Any]], restore_patcher: None
) -> None:
    project.write(
        "bot/c.py",
        """
        import asyncio
        from loguru import logger
        import wisp

        @wisp.command()
        async def n(ctx, i: int):
            for _ in range(3):
                await asyncio.sleep(0)
                logger.info("n={}", i)
            return i
        """,
    )
    project.write("wisp.toml", '[wisp]\ncommand_paths = ["bot"]\n')
    app = project.app(plugins=["logging"])
    app.configure()
    ctxs = [
        await app.make_context(
            wisp.InvocationType.SLASH, "n", target=app.commands["n"], options={"i": i}
        )
        for i in range(20)
    ]
    await asyncio.gather(*(app.invoke(c) for c in ctxs))
    ids = {c.options["i"]: c.request_id for c in ctxs}
    lines = [r for r in log_lines if r["message"].startswith("n=")]
    assert len(lines) == 60
    for r in lines:
        assert r["extra"]["request_id"] == ids[int(r["message"][2:])]
    await app.stop()


def test_two_json_sinks_write_the_same_line(restore_patcher: None) -> None:
    from wisp.plugins.logconfig.records import json_format

    first, second = io.StringIO(), io.StringIO()
    redactor = Redactor.build()
    configure_logging(fmt="json", sink=first, route_stdlib=False, redactor=redactor)
    logger.add(second, format=json_format(redactor), colorize=False)
    logger.bind(k="v").info("twice")
    one, two = json.loads(first.getvalue()), json.loads(second.getvalue())
    assert one == two
    assert set(one) == {"time", "level", "logger", "message", "request_id", "k"}


def test_stdlib_record_with_bad_arguments_is_kept(restore_patcher: None) -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", sink=stream, route_stdlib=False)
    # Straight to the handler: pytest's own capture handler would raise on it first.
    record = logging.LogRecord("sloppy", logging.WARNING, __file__, 1, "%d items", ("x",), None)
    ToLoguru().handle(record)
    (line,) = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert line["logger"] == "sloppy"
    assert line["message"] == "'%d items' ('x',)"
