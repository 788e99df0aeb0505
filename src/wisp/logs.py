"""Logging through loguru, with the current request id on every line."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from loguru import logger

from wisp.context import current_context

if TYPE_CHECKING:
    from loguru import Record

__all__ = ["install_context_patcher", "setup_logging"]

TEXT_FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[request_id]}</cyan> {message}"
)
_patched = False


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


def setup_logging(level: str = "INFO", fmt: str = "text", sink: Any = None) -> None:
    """Replace loguru's sinks with one at ``level``: text, or one JSON object per line."""
    install_context_patcher()
    logger.remove()
    target = sink if sink is not None else sys.stderr
    # diagnose=False: loguru would otherwise print local variables (tokens,
    # passwords) into every traceback.
    if fmt == "json":
        logger.add(target, level=level.upper(), serialize=True, diagnose=False)
    else:
        logger.add(target, level=level.upper(), format=TEXT_FORMAT, colorize=None, diagnose=False)
