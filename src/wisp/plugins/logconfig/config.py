"""``[logging]`` in wisp.toml."""

from __future__ import annotations

import re
from typing import Any, Literal

import attrs

LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


def _levels(_: Any, attribute: attrs.Attribute[dict[str, str]], value: dict[str, str]) -> None:
    for name, level in value.items():
        if str(level).upper() not in LEVELS:
            raise ValueError(f"{name!r}: {level!r} is not one of {', '.join(LEVELS)}")


def _patterns(_: Any, attribute: attrs.Attribute[list[str]], value: list[str]) -> None:
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None


@attrs.frozen
class LoggingConfig:
    """How the process logs (the level itself stays ``[wisp] log_level``)."""

    #: ``json``: one JSON object a line; ``console``: readable lines.  Unset:
    #: ``[wisp] log_format`` (``text`` is ``console``).
    format: Literal["json", "console", "text"] | None = None
    #: Level per logger name, by dotted prefix: ``{"sqlalchemy.engine" = "INFO",
    #: "discord" = "WARNING"}``.  Loguru records use their module's name,
    #: stdlib records their logger's.  The rest use ``[wisp] log_level``.
    levels: dict[str, str] = attrs.field(factory=dict, validator=_levels)
    #: Route the standard ``logging`` module (discord.py, SQLAlchemy, alembic,
    #: asyncio) into loguru, with the same fields and redaction.
    stdlib: bool = True
    #: Where the lines go.
    stream: Literal["stderr", "stdout"] = "stderr"
    #: More regular expressions whose matches are hidden in every record.
    redact: list[str] = attrs.field(factory=list, validator=_patterns)
