"""The standard ``logging`` module routed into loguru.

discord.py, SQLAlchemy, alembic and asyncio log through ``logging``; one
handler on the root logger hands their records to loguru under their logger's
name, so they get the invocation's fields, the redaction and the per-logger
levels like Wisp's own lines.
"""

from __future__ import annotations

import logging

from loguru import logger

__all__ = ["ToLoguru", "install", "uninstall"]


class ToLoguru(logging.Handler):
    """Hands each stdlib record to loguru, at its level, under its logger's name."""

    def emit(self, record: logging.LogRecord) -> None:
        level: str | int
        try:
            level = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format in someone else's call: keep what we can
            message = f"{record.msg!r} {record.args!r}"
        logger.bind(logger_name=record.name).opt(exception=record.exc_info).log(level, message)


def install(levels: dict[str, str], default: str) -> ToLoguru:
    """Add the handler to the root logger; set stdlib levels so nothing is formatted
    only to be dropped."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, ToLoguru)), None)
    if handler is None:
        handler = ToLoguru()
        root.addHandler(handler)
    root.setLevel(_stdlib_level(default))
    for name, level in levels.items():
        if name:
            logging.getLogger(name).setLevel(_stdlib_level(level))
    return handler


def uninstall() -> None:
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, ToLoguru)]:
        root.removeHandler(h)


def _stdlib_level(level: str) -> int:
    level = level.upper()
    # loguru's extra levels, placed where stdlib would put them.
    return {"TRACE": 5, "SUCCESS": 25}.get(level) or logging.getLevelName(level)
