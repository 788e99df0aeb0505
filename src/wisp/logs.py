"""Logging through loguru, with the current request id on every line.

The kernel keeps only what it needs before any plugin is loaded: a sink for
start-up messages (:func:`setup_logging`, called by the CLI) and the patcher
that stamps each record with the request id.  The bundled ``logging`` plugin
replaces both with its configured ones (fields, redaction, JSON lines, levels
per logger, stdlib routing); with it blocked, this is what remains.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

from wisp.context import current_context
from wisp.stash import StashKey

if TYPE_CHECKING:
    from loguru import Record

__all__ = [
    "CLI_LOGGING",
    "CliLogging",
    "install_context_patcher",
    "json_format",
    "setup_logging",
    "use_patcher",
]

TEXT_FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[request_id]}</cyan> {message}"
)
_patched = False


@attrs.frozen
class CliLogging:
    """What the ``wisp`` CLI asked for; on ``app.stash[CLI_LOGGING]`` of the app it runs.

    Its presence says the process's log sinks belong to that app, so a logging
    plugin may replace them; an app built by library code or a test leaves the
    sinks it did not make alone.
    """

    level: str
    format: str
    sink: Any = None


CLI_LOGGING = StashKey[CliLogging]()


def _patch(record: Record) -> None:
    extra = record["extra"]
    if "request_id" not in extra:
        ctx = current_context()
        extra["request_id"] = ctx.request_id if ctx is not None else "-"


def install_context_patcher() -> None:
    """Make every loguru record carry ``extra["request_id"]`` from the contextvar."""
    global _patched
    if not _patched:
        logger.configure(patcher=_patch)
        _patched = True


def use_patcher(patcher: Callable[[Record], None] | None) -> None:
    """Replace loguru's process-wide patcher; ``None`` restores the request-id one.

    A replacement must set ``extra["request_id"]`` itself, as :func:`_patch` does.
    """
    global _patched
    logger.configure(patcher=patcher or _patch)
    _patched = True


def json_format(scrub: Callable[[str], str] | None = None) -> Callable[[Record], str]:
    """A loguru format function: the record as one JSON object on one line.

    Keys: ``time`` (ISO 8601), ``level``, ``logger`` (the module, or a stdlib
    logger's name), ``message``, then the extras (``request_id`` among them),
    then ``exception`` (the traceback, passed through ``scrub``).
    """
    dumps = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":")).encode

    def format_record(record: Record) -> str:
        extra = record["extra"]
        obj: dict[str, Any] = {
            "time": record["time"].isoformat(),
            "level": record["level"].name,
            "logger": record["name"],
            "message": record["message"],
        }
        obj.update(extra)
        obj.pop("_line", None)  # another sink's rendering of this very record
        obj.pop("_exception", None)
        exc = record["exception"]
        if exc is not None:
            text = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
            obj["exception"] = scrub(text.rstrip("\n")) if scrub else text.rstrip("\n")
        extra["_line"] = dumps(obj)
        return "{extra[_line]}\n"

    return format_record


def setup_logging(level: str = "INFO", fmt: str = "text", sink: Any = None) -> None:
    """Replace loguru's sinks with one at ``level``: text, or one JSON object per line."""
    install_context_patcher()
    logger.remove()
    target = sink if sink is not None else sys.stderr
    # diagnose=False: loguru would otherwise print local variables (tokens,
    # passwords) into every traceback.
    if fmt == "json":
        logger.add(
            target, level=level.upper(), format=json_format(), colorize=False, diagnose=False
        )
    else:
        logger.add(target, level=level.upper(), format=TEXT_FORMAT, colorize=None, diagnose=False)
