"""The ``moderation_cases`` section of ``wisp export`` / ``wisp import``.

Rows leave out the database id: an import into another bot's database gets
fresh ids, so it never collides with other guilds' cases.  The per-guild case
``number`` is kept, and is unique per guild in a document as in the table.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select

from wisp.plugins.storage.api import ExportSection, SectionProblem
from wisp_moderation.models import ACTIONS, Case
from wisp_moderation.when import utc

__all__ = ["cases_section"]

SECTION = "moderation_cases"

# field -> (kind, required)
_FIELDS: dict[str, tuple[str, bool]] = {
    "guild_id": ("int", True),
    "number": ("int", True),
    "action": ("action", True),
    "user_id": ("int", True),
    "moderator_id": ("int", False),
    "reason": ("str", True),
    "created_at": ("time", True),
    "expires_at": ("time", False),
    "lifted_at": ("time", False),
    "ref_number": ("int", False),
}


def _row(case: Case) -> dict[str, Any]:
    row = case.as_dict()
    del row["id"]
    return row


async def _dump(session: Any, guild_id: int | None) -> list[dict[str, Any]]:
    query = select(Case).order_by(Case.guild_id, Case.number)
    if guild_id is not None:
        query = query.where(Case.guild_id == guild_id)
    return [_row(c) for c in (await session.scalars(query)).all()]


def _why(kind: str, value: Any) -> str | None:
    """What is wrong with ``value`` as a ``kind``, or None."""
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected a whole number, got {value!r}"
        if value < 1:
            return f"expected 1 or more, got {value!r}"
    elif kind == "str":
        if not isinstance(value, str):
            return f"expected text, got {value!r}"
    elif kind == "action":
        if value not in ACTIONS:
            return f"expected one of {', '.join(ACTIONS)}, got {value!r}"
    elif kind == "time":
        try:
            datetime.fromisoformat(value)
        except (TypeError, ValueError):
            return f"expected an ISO 8601 time, got {value!r}"
    return None


def _validate(rows: list[Any], path: str, guild_id: int | None) -> list[SectionProblem]:
    problems: list[SectionProblem] = []
    seen: dict[tuple[Any, Any], int] = {}
    for i, row in enumerate(rows):
        where = f"{path}[{i}]"
        if not isinstance(row, dict):
            problems.append(SectionProblem(where, f"expected an object, got {row!r}"))
            continue
        for key in sorted(set(row) - set(_FIELDS)):
            problems.append(SectionProblem(f"{where}.{key}", "unknown field"))
        for name, (kind, required) in _FIELDS.items():
            value = row.get(name)
            if value is None:
                if required:
                    problems.append(SectionProblem(f"{where}.{name}", "missing"))
                continue
            why = _why(kind, value)
            if why:
                problems.append(SectionProblem(f"{where}.{name}", why))
        if guild_id is not None and row.get("guild_id") not in (None, guild_id):
            problems.append(
                SectionProblem(
                    f"{where}.guild_id",
                    f"{row['guild_id']!r} is not the document's guild {guild_id}",
                )
            )
        key = (row.get("guild_id"), row.get("number"))
        try:
            if key in seen:
                problems.append(
                    SectionProblem(
                        where,
                        f"case number {key[1]!r} of guild {key[0]!r} is also {path}[{seen[key]}]",
                    )
                )
            else:
                seen[key] = i
        except TypeError:
            pass  # an unhashable value, already reported
    return problems


def _value(name: str, value: Any) -> Any:
    if value is not None and _FIELDS[name][0] == "time":
        return utc(datetime.fromisoformat(value))
    return value


async def _load(
    session: Any, rows: list[dict[str, Any]], guild_id: int | None, loaded: Callable[[int], None]
) -> None:
    wipe = delete(Case)
    if guild_id is not None:
        wipe = wipe.where(Case.guild_id == guild_id)
    await session.execute(wipe)
    values = [{name: _value(name, row.get(name)) for name in _FIELDS} for row in rows]
    if values:
        await session.execute(insert(Case), values)
    loaded(len(values))


def cases_section() -> ExportSection:
    return ExportSection(SECTION, _dump, _validate, _load)
