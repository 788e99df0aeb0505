"""Reading "when" from a user: a duration (``10m``, ``2h30m``, ``1d``) or an ISO time.

Errors are :class:`wisp.UserError` naming what was wrong, so the user sees
them (ephemeral) and nothing is stored.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import wisp

__all__ = ["describe", "parse_at", "parse_duration", "utc"]

_DURATION = re.compile(
    r"(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?"
)
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """``"2h30m"`` -> 2.5 hours.  Units: w, d, h, m, s, largest first."""
    compact = text.strip().lower().replace(" ", "")
    match = _DURATION.fullmatch(compact)
    if not compact or match is None:
        raise wisp.UserError(
            f"Cannot read the duration {text!r}: use numbers with w, d, h, m or s, "
            "largest first, like `10m`, `2h30m` or `1d`."
        )
    seconds = sum(int(v) * _UNITS[k] for k, v in match.groupdict().items() if v)
    if seconds <= 0:
        raise wisp.UserError(f"The duration {text!r} is zero: give a time in the future.")
    return timedelta(seconds=seconds)


def parse_at(text: str) -> datetime:
    """An ISO 8601 time (``2026-12-01T09:00``, ``2026-12-01 09:00+01:00``); no zone is UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise wisp.UserError(
            f"Cannot read the time {text!r}: use ISO 8601, like `2026-12-01T09:00` "
            "(UTC) or `2026-12-01T09:00+01:00`."
        ) from None
    return utc(when)


def utc(when: datetime) -> datetime:
    """Aware UTC (SQLite hands back naive datetimes that were stored as UTC)."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def describe(delta: timedelta) -> str:
    """``timedelta(hours=2, minutes=30)`` -> ``"2h30m"`` (seconds only under a minute)."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    parts = []
    for unit in ("w", "d", "h", "m"):
        n, seconds = divmod(seconds, _UNITS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)
