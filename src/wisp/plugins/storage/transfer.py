"""``wisp export`` and ``wisp import``: a versioned JSON document of what plugins store.

Each plugin contributes sections through ``wisp_export_sections``.  Import
validates the whole document first and reports every problem with its JSON
path; only a clean document is written, in one transaction, replacing what it
covers (one guild's rows, or everything).  Export, wipe, import, export gives
the same document byte for byte.
"""

from __future__ import annotations

import graphlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    text,
)
from sqlalchemy.exc import SQLAlchemyError

import wisp
from wisp.plugins.storage.api import ExportSection, JSONDocument, Model, SectionProblem
from wisp.plugins.storage.models import GuildConfig, GuildData, PluginState

if TYPE_CHECKING:
    from sqlalchemy import Column
    from sqlalchemy.ext.asyncio import AsyncSession

    from wisp.plugins.storage.database import Database

__all__ = [
    "FORMAT",
    "VERSION",
    "ImportRejected",
    "core_sections",
    "export_document",
    "import_document",
    "read_document",
    "table_section",
    "validate_document",
    "write_document",
]

FORMAT = "wisp-export"
VERSION = 1
CHUNK = 1000
Progress = Callable[[str, int, int], None]


class ImportRejected(wisp.UserError):
    """The document has problems; nothing was written."""

    def __init__(self, problems: Sequence[SectionProblem | str]) -> None:
        self.problems = [str(p) for p in problems]
        super().__init__(f"import rejected: {len(self.problems)} problem(s)")


# -- one section per table ------------------------------------------------------


def _to_json(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # SQLite keeps no zone; Wisp writes UTC
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    return value


def _check(column: Column[Any], value: Any) -> str | None:
    """Why ``value`` cannot go into ``column``, or None."""
    if value is None:
        return None if column.nullable else "must not be null"
    t = column.type
    if isinstance(t, JSON | JSONDocument):
        return None
    if isinstance(t, Boolean):
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    if isinstance(t, Integer | BigInteger | SmallInteger):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected an integer, got {value!r}"
        if isinstance(t, BigInteger) and not -(2**63) <= value < 2**63:
            return f"{value} does not fit in 64 bits"
        return None
    if isinstance(t, String | Text):
        if not isinstance(value, str):
            return f"expected a string, got {value!r}"
        if t.length is not None and len(value) > t.length:
            return f"longer than {t.length} characters"
        return None
    if isinstance(t, DateTime):
        if not isinstance(value, str):
            return f"expected an ISO 8601 date-time string, got {value!r}"
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return f"not an ISO 8601 date-time: {value!r}"
        return None if parsed.tzinfo is not None else "date-time needs a UTC offset"
    return None


def _from_json(column: Column[Any], value: Any) -> Any:
    if value is not None and isinstance(column.type, DateTime):
        return datetime.fromisoformat(value)
    return value


def table_section(
    model: type[Model] | Table,
    *,
    name: str | None = None,
    guild_column: str | None = "guild_id",
    after: tuple[str, ...] = (),
) -> ExportSection:
    """An export section that dumps and replaces one table, checked by column type.

    ``guild_column`` scopes the section to one guild on ``--guild`` exports;
    ``None`` makes it global: left out of per-guild exports, and never touched
    by a per-guild import.
    """
    table: Table = model if isinstance(model, Table) else model.__table__  # type: ignore[assignment]
    section = name or table.name
    columns = list(table.columns)
    pk = list(table.primary_key.columns)
    serial = table.autoincrement_column  # may be left out: the database numbers it

    def scoped(stmt: Any, guild_id: int | None) -> Any:
        if guild_id is not None and guild_column is not None:
            return stmt.where(table.c[guild_column] == guild_id)
        return stmt

    async def dump(session: AsyncSession, guild_id: int | None) -> list[dict[str, Any]]:
        if guild_id is not None and guild_column is None:
            return []
        result = await session.execute(scoped(select(table).order_by(*pk), guild_id))
        return [{c.name: _to_json(row[c.name]) for c in columns} for row in result.mappings()]

    def validate(rows: list[Any], path: str, guild_id: int | None) -> list[SectionProblem]:
        problems: list[SectionProblem] = []
        if guild_id is not None and guild_column is None and rows:
            return [
                SectionProblem(
                    path,
                    "a global section cannot be imported from a guild "
                    "document; import a full export instead",
                )
            ]
        seen: dict[tuple[Any, ...], int] = {}
        names = {c.name for c in columns}
        for i, row in enumerate(rows):
            where = f"{path}[{i}]"
            if not isinstance(row, dict):
                problems.append(SectionProblem(where, f"expected an object, got {row!r}"))
                continue
            for key in sorted(set(row) - names):
                problems.append(SectionProblem(f"{where}.{key}", "unknown field"))
            for c in columns:
                if c.name not in row:
                    optional = c.nullable or c.default is not None or c.server_default is not None
                    if not optional and c is not serial:
                        problems.append(SectionProblem(f"{where}.{c.name}", "missing"))
                    continue
                why = _check(c, row[c.name])
                if why:
                    problems.append(SectionProblem(f"{where}.{c.name}", why))
                elif c.name == guild_column and guild_id is not None and row[c.name] != guild_id:
                    problems.append(
                        SectionProblem(
                            f"{where}.{c.name}",
                            f"{row[c.name]!r} is not the document's guild {guild_id}",
                        )
                    )
            key = tuple(row.get(c.name) for c in pk)
            try:
                if key in seen:
                    problems.append(
                        SectionProblem(
                            where,
                            f"same key as {path}[{seen[key]}]: "
                            + ", ".join(f"{c.name}={v!r}" for c, v in zip(pk, key, strict=True)),
                        )
                    )
                else:
                    seen[key] = i
            except TypeError:
                pass  # an unhashable key value is already reported above
        return problems

    async def load(
        session: AsyncSession,
        rows: list[dict[str, Any]],
        guild_id: int | None,
        loaded: Callable[[int], None],
    ) -> None:
        if guild_id is not None and guild_column is None:
            return  # a guild document never replaces a global table
        await session.execute(scoped(delete(table), guild_id))
        done = 0
        # Rows may leave out different defaulted columns: insert alike rows together.
        groups: dict[frozenset[str], list[dict[str, Any]]] = {}
        for row in rows:
            value = {c.name: _from_json(c, row[c.name]) for c in columns if c.name in row}
            groups.setdefault(frozenset(value), []).append(value)
        for values in groups.values():
            for start in range(0, len(values), CHUNK):
                chunk = values[start : start + CHUNK]
                await session.execute(insert(table), chunk)
                done += len(chunk)
                loaded(done)
        if (
            serial is not None
            and session.bind is not None
            and session.bind.dialect.name == "postgresql"
        ):
            # Rows came with their ids: move the sequence past them.
            await session.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence(:t, :c), "
                    f"COALESCE((SELECT MAX({serial.name}) FROM {table.name}), 0) + 1, false)"
                ),
                {"t": table.name, "c": serial.name},
            )

    return ExportSection(section, dump, validate, load, after)


def core_sections() -> list[ExportSection]:
    return [table_section(GuildConfig), table_section(GuildData), table_section(PluginState)]


# -- documents --------------------------------------------------------------------


def _sections(app: wisp.Wisp) -> dict[str, ExportSection]:
    out: dict[str, ExportSection] = {}
    for plugin, result in app.pluginmanager.results("wisp_export_sections", app=app):
        for section in result:
            if section.name in out:
                raise wisp.PluginError(
                    f"export section {section.name!r} is declared twice (again by {plugin!r})"
                )
            out[section.name] = section
    return out


def _order(sections: Mapping[str, ExportSection]) -> list[str]:
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name in sorted(sections):
        sorter.add(name, *[a for a in sections[name].after if a in sections])
    return list(sorter.static_order())


async def export_document(
    app: wisp.Wisp, *, guild_id: int | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    """Every section's rows, in one consistent read."""
    sections = _sections(app)
    db: Database = app.services.get("db")
    out: dict[str, Any] = {}
    async with db.transaction() as session:
        for name in _order(sections):
            rows = await sections[name].dump(session, guild_id)
            out[name] = rows
            if progress:
                progress(name, len(rows), len(rows))
    return {"format": FORMAT, "version": VERSION, "guild_id": guild_id, "sections": out}


def write_document(doc: Mapping[str, Any], path: Path | None) -> None:
    text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if path is None:
        sys.stdout.write(text)
    else:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)  # never leave a half-written export behind


def read_document(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ImportRejected([f"$: cannot read {path}: {exc.strerror}"]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportRejected(
            [f"$: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"]
        ) from None


def validate_document(doc: Any, sections: Mapping[str, ExportSection]) -> list[str]:
    """Every problem in ``doc``, each with its JSON path; empty if it can be imported."""
    if not isinstance(doc, dict):
        return [f"$: expected an object, got {type(doc).__name__}"]
    problems: list[str] = []
    if doc.get("format") != FORMAT:
        problems.append(f"$.format: expected {FORMAT!r}, got {doc.get('format')!r}")
    if doc.get("version") != VERSION:
        problems.append(f"$.version: this Wisp reads version {VERSION}, got {doc.get('version')!r}")
    guild_id = doc.get("guild_id")
    if guild_id is not None and (isinstance(guild_id, bool) or not isinstance(guild_id, int)):
        problems.append(f"$.guild_id: expected an integer or null, got {guild_id!r}")
        guild_id = None
    for key in sorted(set(doc) - {"format", "version", "guild_id", "sections"}):
        problems.append(f"$.{key}: unknown field")
    body = doc.get("sections")
    if not isinstance(body, dict):
        return [*problems, f"$.sections: expected an object, got {body!r}"]
    for name, rows in body.items():
        path = f"$.sections.{name}"
        if name not in sections:
            known = ", ".join(sorted(sections)) or "none"
            problems.append(f"{path}: no loaded plugin reads this section (known: {known})")
            continue
        if not isinstance(rows, list):
            problems.append(f"{path}: expected a list of rows, got {type(rows).__name__}")
            continue
        problems.extend(str(p) for p in sections[name].validate(rows, path, guild_id))
    return problems


async def import_document(
    app: wisp.Wisp, doc: Any, *, dry_run: bool = False, progress: Progress | None = None
) -> dict[str, int]:
    """Validate ``doc`` whole; unless ``dry_run``, replace what it covers in one transaction."""
    sections = _sections(app)
    problems = validate_document(doc, sections)
    if problems:
        raise ImportRejected(problems)
    body: dict[str, list[dict[str, Any]]] = doc["sections"]
    counts = {name: len(body[name]) for name in _order(sections) if name in body}
    if dry_run:
        return counts
    db: Database = app.services.get("db")
    current = ""
    try:
        async with db.transaction() as session:
            for name in counts:
                current = name

                def loaded(done: int, name: str = name) -> None:
                    if progress:
                        progress(name, done, counts[name])

                await sections[name].load(session, body[name], doc.get("guild_id"), loaded)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise ImportRejected(
            [
                f"$.sections.{current}: the database refused the rows, so nothing was written: "
                f"{reason}"
            ]
        ) from exc
    if "plugin_state" in app.services:
        app.services.get("plugin_state").invalidate()  # rows changed under its cache
    return counts
