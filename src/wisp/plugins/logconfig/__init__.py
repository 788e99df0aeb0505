"""Structured logs: JSON lines or console, invocation fields, redaction, stdlib routing.

Bundled plugin ``logging`` (module ``wisp.plugins.logconfig``, so that it
never shadows the standard library's ``logging``); block it with
``-p no:logging`` and the kernel's plain sink with the request id remains.

Every record written while an invocation runs, from any awaited call, carries
its request id, invocation type, guild, channel, user and the command, event,
job or saga name; records of the standard ``logging`` module get the same.
Known secrets (the bot token, passwords in URLs, webhook tokens, anything in a
secret-named setting) are replaced by ``***`` before any sink sees a record.
"""

from __future__ import annotations

import sys
from typing import Any

from loguru import logger

import wisp
from wisp.logs import CLI_LOGGING, use_patcher
from wisp.plugins.logconfig import stdlib
from wisp.plugins.logconfig.api import configure_logging, redactor_key
from wisp.plugins.logconfig.config import LoggingConfig
from wisp.plugins.logconfig.records import Redactor, make_patcher, secrets_of

__all__ = ["LoggingConfig", "redactor_key"]


WISP_PLUGIN = wisp.PluginMetadata(
    name="logging",
    description="Loguru set up once: JSON or console lines, request fields on every "
    "record, stdlib logging routed, secrets redacted.",
    api=">=1.0,<2",
    data="Nothing stored; log lines may carry user and guild ids.",
)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"logging": LoggingConfig}


@wisp.hookimpl(tryfirst=True)  # before other plugins log with the configured fields
def wisp_configure(app: wisp.Wisp) -> None:
    config: LoggingConfig = app.config.section("logging")
    redactor = Redactor.build(secrets_of(app), config.redact)
    app.stash[redactor_key] = redactor
    cli = app.stash.get(CLI_LOGGING, None)
    if cli is None:
        # Library code or a test built this app: the sinks are not ours to
        # replace; the fields and the redaction still apply to every record.
        use_patcher(make_patcher(redactor))
        return
    fmt = config.format or app.config.core.log_format
    configure_logging(
        level=cli.level,
        fmt="json" if fmt == "json" else "console",
        levels=config.levels,
        route_stdlib=config.stdlib,
        sink=cli.sink or (sys.stdout if config.stream == "stdout" else sys.stderr),
        redactor=redactor,
    )
    logger.debug("logging: {} lines at {} ({} secrets known)", fmt, cli.level, len(redactor.values))


@wisp.hookimpl
def wisp_unconfigure(app: wisp.Wisp) -> None:
    if redactor_key in app.stash:
        use_patcher(None)
        if app.stash.get(CLI_LOGGING, None) is not None:
            stdlib.uninstall()
