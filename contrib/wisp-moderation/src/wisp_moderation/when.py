"""Reading durations from a user (``10m``, ``2h30m``, ``7d``), and UTC helpers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import wisp

__all__ = ["describe", "parse_duration", "utc"]

_DURATION = re.compile(
    r"(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?"
)
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str, option: str = "duration") -> timedelta:
    """``"2h30m"`` -> 2.5 hours; a :class:`wisp.UserError` naming ``option`` otherwise."""
    compact = text.strip().lower().replace(" ", "")
    match = _DURATION.fullmatch(compact)
    if not compact or match is None:
        raise wisp.UserError(
            f"Cannot read the {option} {text!r}: use numbers with w, d, h, m or s, "
            "largest first, like `10m`, `2h30m` or `7d`."
        )
    seconds = sum(int(v) * _UNITS[k] for k, v in match.groupdict().items() if v)
    if seconds <= 0:
        raise wisp.UserError(f"The {option} {text!r} is zero.")
    return timedelta(seconds=seconds)


def utc(when: datetime) -> datetime:
    """Aware UTC (SQLite hands back naive datetimes that were stored as UTC)."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def describe(delta: timedelta) -> str:
    """``timedelta(hours=2, minutes=30)`` -> ``"2h30m"``."""
    seconds = max(0, round(delta.total_seconds()))
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        n, seconds = divmod(seconds, _UNITS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"
