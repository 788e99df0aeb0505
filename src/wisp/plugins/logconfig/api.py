"""Public helpers of the ``logging`` plugin; importing this registers nothing.

:func:`configure_logging` is what the plugin does to the CLI's process, usable
on its own (a script, a benchmark, a test with its own sink).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from loguru import logger

import wisp
from wisp.logs import use_patcher
from wisp.plugins.logconfig import stdlib
from wisp.plugins.logconfig.config import LEVELS
from wisp.plugins.logconfig.records import (
    FIELDS,
    REDACTED,
    Redactor,
    console_format,
    json_format,
    make_patcher,
)

__all__ = ["FIELDS", "REDACTED", "Redactor", "configure_logging", "redactor_key", "redactor_of"]

#: The app's :class:`Redactor`, set by the plugin in ``wisp_configure``.
redactor_key = wisp.StashKey[Redactor]()


def redactor_of(app: wisp.Wisp) -> Redactor | None:
    """The redactor the logging plugin built for ``app`` (``None`` if it is blocked):
    other plugins scrub what they send elsewhere with it."""
    return app.stash.get(redactor_key, None)


def configure_logging(
    *,
    level: str = "INFO",
    fmt: str = "console",
    levels: Mapping[str, str] | None = None,
    route_stdlib: bool = True,
    sink: Any = None,
    redactor: Redactor | None = None,
) -> int:
    """Replace loguru's sinks with one configured sink; return its handler id.

    ``fmt`` is ``json`` (one object a line) or ``console``/``text``;
    ``levels`` maps dotted logger-name prefixes to levels, the rest get
    ``level``.  Every record gets the invocation's fields and is scrubbed by
    ``redactor`` (secret shapes only, if not given).
    """
    redactor = redactor or Redactor.build()
    use_patcher(make_patcher(redactor))
    by_name = {"": level.upper(), **{k: v.upper() for k, v in (levels or {}).items()}}
    lowest = min(by_name.values(), key=LEVELS.index)
    logger.remove()
    handler = logger.add(
        sink if sink is not None else sys.stderr,
        level=lowest,
        # loguru's dict filter: the longest dotted prefix of the record's name wins.
        filter=by_name if len(by_name) > 1 else None,  # type: ignore[arg-type]
        format=json_format(redactor) if fmt == "json" else console_format(redactor),
        colorize=False if fmt == "json" else None,
        # Local variables in tracebacks would print tokens and passwords.
        diagnose=False,
        backtrace=False,
    )
    if route_stdlib:
        stdlib.install({k: v for k, v in by_name.items() if k}, by_name[""])
    return handler
