"""Rate-limit specifications: ``"5/10s per user"``, parsed and checked once.

``N/PERIOD [per KEY]``: N calls per PERIOD (``s``, ``10s``, ``m``, ``2h``,
``d``, or ``second``/``minute``/``hour``/``day``), counted per KEY: ``user``
(default), ``member`` (user in a guild), ``channel``, ``guild``, ``command``
(everyone together) or ``global`` (across commands).  The bucket refills
continuously (GCRA): a limit of 5/10s lets a burst of 5 through, then one call
every 2 seconds.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from wisp.context import WispContext

__all__ = ["KEYS", "Limit", "LimitError", "parse_limit"]

KEYS = ("user", "member", "channel", "guild", "command", "global")
_UNITS = {
    "s": 1.0,
    "second": 1.0,
    "m": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_SPEC = re.compile(
    r"^\s*(?P<n>-?\d+)\s*/\s*(?P<count>\d*\.?\d*)\s*(?P<unit>[a-z]+)\s*(?:per\s+(?P<key>\w+))?\s*$"
)


class LimitError(ValueError):
    """A limit that cannot work (zero, negative, unknown unit or key)."""


@attrs.frozen
class Limit:
    """``rate`` calls per ``period`` seconds, per ``key``."""

    rate: int
    period: float
    key: str = "user"
    #: Seconds between calls once the burst is spent (computed once: it is read
    #: on every check).
    interval: float = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "interval", self.period / self.rate)

    def bucket(self, ctx: WispContext, command: str) -> str | None:
        """This call's bucket name, or None when the key does not apply (no guild)."""
        ident: int | str | None
        if self.key == "user":
            ident = ctx.user_id
        elif self.key == "member":
            ident = None if ctx.guild_id is None else f"{ctx.guild_id}:{ctx.user_id}"
        elif self.key == "channel":
            ident = ctx.channel_id
        elif self.key == "guild":
            ident = ctx.guild_id
        elif self.key == "command":
            ident = "all"
        else:
            return f"global:{self.rate}/{self.period}"
        if ident is None:
            return None
        return f"{command}:{self.key}:{ident}:{self.rate}/{self.period}"

    def __str__(self) -> str:
        return f"{self.rate}/{self.period:g}s per {self.key}"


def parse_limit(spec: str) -> Limit:
    """Parse ``"5/10s per user"``; :class:`LimitError` says what is wrong."""
    m = _SPEC.match(spec)
    if m is None:
        raise LimitError(
            f"{spec!r} is not a limit: write N/PERIOD [per KEY], e.g. '5/10s per user'"
        )
    rate = int(m["n"])
    count = float(m["count"]) if m["count"] not in ("", ".") else 1.0
    unit = m["unit"]
    if unit not in _UNITS:
        raise LimitError(f"{spec!r}: unknown unit {unit!r} (use s, m, h, d)")
    key = m["key"] or "user"
    if key not in KEYS:
        raise LimitError(f"{spec!r}: unknown key {key!r} (use {', '.join(KEYS)})")
    if rate <= 0:
        raise LimitError(f"{spec!r}: the number of calls must be at least 1")
    if count <= 0:
        raise LimitError(f"{spec!r}: the period must be longer than 0")
    return Limit(rate, count * _UNITS[unit], key)
