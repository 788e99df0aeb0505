"""The storage plugin on SQLite and on PostgreSQL: the same tests on both."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

import pytest

import wisp
from wisp.cli.main import main
from wisp.plugins import storage

pytestmark = pytest.mark.needs_plugin("storage")


def configure(project, database, extra: str = "", **kwargs) -> wisp.Wisp:
    url, schema = database
    project.write(
        "wisp.toml",
        f"""
        [wisp]
        autoload = false
        plugins = ["storage"]

        [storage]
        url = "{url}"
        schema = "{schema}"
        {extra}
    """,
    )
    return project.app(autoload=None, **kwargs)


async def started(project, database, extra: str = "auto_migrate = true") -> wisp.Wisp:
    app = configure(project, database, extra)
    await app.start()
    return app


# -- migrations ---------------------------------------------------------------


async def test_core_migrations_apply_and_match_the_models(project, database) -> None:
    app = configure(project, database).configure()
    m = storage.migrator(app)
    [status] = await m.status()
    assert (status.branch.label, status.current) == ("storage", None)
    assert status.head is not None and status.pending
    moved = await m.upgrade()
    assert [s.branch.label for s in moved] == ["storage"]
    [status] = await m.status()
    assert status.current == status.head
    # Alembic's autogenerate comparison: the models and the migrations agree.
    assert await m.check() == []
    assert await m.upgrade() == []


async def test_start_refuses_pending_migrations_unless_embedded(project, database) -> None:
    app = configure(project, database)
    with pytest.raises(
        wisp.PluginError,
        match=r"service 'migrations' \(plugin 'storage'\) failed "
        r"to start: MigrationError: pending migrations: storage: at base, head \w+; "
        r"run `wisp migrate` first",
    ):
        await app.start()


async def test_embedded_default_upgrades_itself_and_says_so(project, log_lines) -> None:
    project.write("wisp.toml", '[wisp]\nautoload = false\nplugins = ["storage"]\n')
    app = project.app(autoload=None)
    async with app:
        db = app.services.get("db")
        assert db.embedded and db.url.endswith(f"{project.root}/wisp.sqlite3")
        await app.services.get("guild_data").set(1, "x", "k", 1)
        health = await app.services.health_all()
        assert all(h.ok for h in health.values()), health
    assert (project.root / "wisp.sqlite3").exists()
    assert any(
        "applying pending migrations (the embedded database)" in r["message"] for r in log_lines
    )


def make_notes_plugin(site, uid: str) -> tuple[str, Path]:
    """An installed third-party plugin owning one table, with an empty migrations folder."""
    module = f"notes_{uid}"
    root = site(
        f"wisp-notes-{uid}",
        "1.0",
        {module: module},
        {
            module: f"""
        from pathlib import Path

        from sqlalchemy import BigInteger, Integer, String
        from sqlalchemy.orm import Mapped, mapped_column

        import wisp
        from wisp.plugins.storage.api import JSONDocument, Model, ModelSet
        from wisp.plugins.storage.transfer import table_section

        wisp_requires = ["storage"]


        class Note(Model):
            __tablename__ = "{module}"

            # SQLite numbers rows only for INTEGER PRIMARY KEY columns.
            id: Mapped[int] = mapped_column(
                BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
            )
            guild_id: Mapped[int] = mapped_column(BigInteger, index=True)
            text: Mapped[str] = mapped_column(String(500))
            extra: Mapped[dict] = mapped_column(JSONDocument(), nullable=True)


        @wisp.hookimpl
        def wisp_storage_models():
            return ModelSet([Note], Path(__file__).parent / "{module}_migrations",
                            branch="{module}")


        @wisp.hookimpl
        def wisp_export_sections(app):
            return [table_section(Note)]
    """
        },
    )
    return module, root / f"{module}_migrations"


@pytest.mark.slow
async def test_a_plugin_adds_a_table_in_its_own_branch(project, database, site, capsys) -> None:
    module, folder = make_notes_plugin(site, uuid.uuid4().hex[:8])
    url, schema = database
    project.write(
        "wisp.toml",
        f"""
        [wisp]
        autoload = false
        plugins = ["storage", "{module}"]

        [storage]
        url = "{url}"
        schema = "{schema}"
    """,
    )
    os.chdir(project.root)
    app = project.app(autoload=None).configure()
    with pytest.raises(wisp.PluginError, match=f"{module}: has tables but no migrations"):
        await app.start()  # never start without the plugin's tables
    assert await asyncio.to_thread(main, ["migrate", "new", module, "-m", "notes table"]) == 1
    assert "the database is behind; run `wisp migrate`" in capsys.readouterr().err
    # `wisp migrate` brings every branch it can up, then names the one it cannot.
    assert await asyncio.to_thread(main, ["migrate"]) == 1
    assert (
        f"upgraded storage; but plugins with tables but no migrations: {module}"
        in capsys.readouterr().err
    )
    assert await asyncio.to_thread(main, ["migrate", "new", module, "-m", "notes table"]) == 0
    [created] = folder.glob("*_notes_table.py")
    text = created.read_text()
    assert f"branch_labels: str | Sequence[str] | None = ('{module}',)" in text
    assert "guild_configs" not in text  # only the plugin's own tables
    assert "JSONDocument()" in text

    assert await asyncio.to_thread(main, ["migrate"]) == 0
    assert f"upgraded {module}: base ->" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["migrate", "status"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["storage"][-1] == "ok" and rows[module][-1] == "ok"
    assert rows[module][2] == rows[module][3] == created.name.split("_")[0]
    assert await asyncio.to_thread(main, ["migrate", "check"]) == 0
    assert await asyncio.to_thread(main, ["migrate", "new", module, "-m", "nothing"]) == 0
    assert "the models match the database; nothing written" in capsys.readouterr().out
    assert list(folder.glob("*_nothing.py")) == []

    # Export, wipe the plugin's branch, import: ids come back, and the
    # database's own numbering carries on after them.
    from wisp.plugins.storage.transfer import ImportRejected, export_document, import_document

    app = project.app(autoload=None)
    async with app:
        note = app.pluginmanager.info(module).plugin.Note
        async with app.services.get("db").transaction() as session:
            session.add_all([note(guild_id=5, text="a"), note(guild_id=6, text="b")])
        doc = await export_document(app)
        m = storage.migrator(app)
        await m.downgrade(module, "base")
        await m.upgrade()
        assert await import_document(app, doc) == {
            "guild_configs": 0,
            "guild_data": 0,
            "plugin_states": 0,
            module: 2,
        }
        async with app.services.get("db").transaction() as session:
            session.add(note(guild_id=5, text="c"))  # no id given: must not collide
        rows = (await export_document(app))["sections"][module]
        assert [(r["id"], r["text"]) for r in rows] == [(1, "a"), (2, "b"), (3, "c")]
        # A guild-5 document whose note id is taken by guild 6: the database
        # refuses, the import is rejected whole and nothing changes.
        clash = await export_document(app, guild_id=5)
        clash["sections"][module][0]["id"] = 2
        with pytest.raises(ImportRejected) as info:
            await import_document(app, clash)
        assert info.value.problems[0].startswith(
            f"$.sections.{module}: the database refused the rows, so nothing was written"
        )
        assert (await export_document(app))["sections"][module] == rows

    # The plugin's branch moves on its own.
    assert await asyncio.to_thread(main, ["migrate", "downgrade", module, "base"]) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["migrate", "downgrade", module, "-1"]) == 1
    assert f"{module} is already at base" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["migrate", "status"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows[module][2] == "-" and rows[module][-1] == "pending"
    assert rows["storage"][-1] == "ok"
    assert await asyncio.to_thread(main, ["migrate"]) == 0
    assert await asyncio.to_thread(main, ["migrate", "downgrade", module, "nope"]) == 1
    assert f"downgrading {module} to 'nope'" in capsys.readouterr().err

    # Uninstalled (blocked) while its revision is applied: a clear error.
    assert await asyncio.to_thread(main, ["-p", f"no:{module}", "migrate", "status"]) == 1
    err = capsys.readouterr().err
    assert "which no loaded plugin provides" in err and "downgrade its branch to base" in err


async def test_a_failed_migration_applies_nothing(project, database, site) -> None:
    module, folder = make_notes_plugin(site, uuid.uuid4().hex[:8])
    folder.mkdir()
    tag = module[-8:]
    (folder / "a1.py").write_text(f'''
import sqlalchemy as sa
from alembic import op

revision = "a1{tag}"
down_revision = None
branch_labels = ("{module}",)


def upgrade():
    op.create_table("{module}", sa.Column("id", sa.BigInteger(), primary_key=True))


def downgrade():
    op.drop_table("{module}")
''')
    (folder / "a2.py").write_text(f"""
revision = "a2{tag}"
down_revision = "a1{tag}"
branch_labels = None


def upgrade():
    raise RuntimeError("half-written migration")


def downgrade():
    pass
""")
    configure(project, database)
    app = project.app(autoload=None, plugins=[module]).configure()
    m = storage.migrator(app)
    with pytest.raises(
        wisp.PluginError, match=f"upgrading {module} failed: RuntimeError: half-written migration"
    ):
        await m.upgrade()
    status = {s.branch.label: s.current for s in await m.status()}
    assert status[module] is None  # a1 was rolled back with a2
    (folder / "a2.py").unlink()
    assert module in [s.branch.label for s in await m.upgrade()]  # a1 applies cleanly now


async def test_check_fails_when_models_and_migrations_disagree(project, database, site) -> None:
    module, folder = make_notes_plugin(site, uuid.uuid4().hex[:8])
    folder.mkdir()
    (folder / "0001_partial.py").write_text(f'''
import sqlalchemy as sa
from alembic import op


revision = "0001{module[-8:]}"
down_revision = None
branch_labels = ("{module}",)
depends_on = None


def upgrade():
    op.create_table("{module}", sa.Column("id", sa.BigInteger(), primary_key=True))


def downgrade():
    op.drop_table("{module}")
''')
    app = configure(project, database).configure()
    app = project.app(autoload=None, plugins=[module]).configure()
    m = storage.migrator(app)
    await m.upgrade()
    diffs = await m.check()
    assert f"add_column {module}.guild_id" in diffs
    assert f"add_column {module}.text" in diffs
    assert f"add_index ix_{module}_guild_id on {module}" in diffs


# -- guild data ---------------------------------------------------------------


async def test_guild_data_is_namespaced_json(project, database) -> None:
    app = await started(project, database)
    try:
        data = app.services.get("guild_data")
        fun = data.namespace("fun")
        await fun.set(1, "scores", {"ann": 3, "bo": [1, 2]})
        await fun.set(1, "nothing", None)
        await data.set(1, "admin", "scores", "other namespace")
        await fun.set(2, "scores", 7)
        assert await fun.get(1, "scores") == {"ann": 3, "bo": [1, 2]}
        assert await fun.get(1, "nothing", default="absent") is None  # stored null
        assert await fun.get(1, "missing", default="absent") == "absent"
        assert await fun.get_all(1) == {"nothing": None, "scores": {"ann": 3, "bo": [1, 2]}}
        assert await data.get(1, "admin", "scores") == "other namespace"
        assert await fun.delete(1, "scores") is True
        assert await fun.delete(1, "scores") is False
        assert await fun.get_all(2) == {"scores": 7}
    finally:
        await app.stop()


async def test_set_is_an_atomic_upsert_under_100_concurrent_writers(project, database) -> None:
    app = await started(project, database)
    try:
        data = app.services.get("guild_data")
        await asyncio.gather(*(data.set(9, "race", "same", i) for i in range(100)))
        await asyncio.gather(*(data.set(9, "race", f"k{i}", i) for i in range(100)))
        everything = await data.get_all(9, "race")
        assert len(everything) == 101
        assert everything["same"] in range(100)
        assert all(everything[f"k{i}"] == i for i in range(100))
    finally:
        await app.stop()


# -- plugin state -------------------------------------------------------------


async def test_plugin_state_defaults_and_per_guild_switches(project, database, site) -> None:
    site(
        "wisp-quiet",
        "1.0",
        {"quiet": "quiet_plugin"},
        {"quiet_plugin": "wisp_default_enabled = False\n"},
    )
    app = configure(project, database, "auto_migrate = true", plugins=["quiet"])
    async with app:
        states = app.services.get("plugin_state")
        assert await states.is_enabled("quiet", 1) is False
        assert await states.is_enabled("storage", 1) is True
        await states.set_enabled("quiet", 1, True)
        assert await states.is_enabled("quiet", 1) is True
        assert await states.is_enabled("quiet", 2) is False
        await states.mark_degraded("quiet", 1, "timeout talking to the API")
        [status] = await states.list(1)
        assert (status.plugin, status.enabled, status.degraded, status.last_error) == (
            "quiet",
            True,
            True,
            "timeout talking to the API",
        )
        await states.mark_degraded("quiet", 1, None)
        assert (await states.get("quiet", 1)).degraded is False


# -- export / import ----------------------------------------------------------


async def fill(app: wisp.Wisp) -> None:
    data = app.services.get("guild_data")
    for guild in (1, 2):
        await data.set(guild, "fun", "scores", {"ann": guild})
        await data.set(guild, "fun", "motd", "héllo ✨")
    await app.services.get("plugin_state").set_enabled("basics", 2, False)
    async with app.services.get("db").transaction() as s:
        from wisp.plugins.storage.models import GuildConfig

        s.add(GuildConfig(guild_id=1, settings={"prefix": "!"}))


async def test_export_wipe_import_export_is_identical(project, database, tmp_path) -> None:
    from wisp.plugins.storage.transfer import export_document, import_document

    app = await started(project, database)
    try:
        await fill(app)
        first = await export_document(app)
        assert [
            len(first["sections"][k]) for k in ("guild_configs", "guild_data", "plugin_states")
        ] == [1, 4, 1]
        guild2 = await export_document(app, guild_id=2)
        assert {r["guild_id"] for r in guild2["sections"]["guild_data"]} == {2}
        # wipe: back to base and up again
        m = storage.migrator(app)
        await m.downgrade("storage", "base")
        await m.upgrade()
        assert (await export_document(app))["sections"]["guild_data"] == []
        counts = await import_document(app, first)
        assert counts == {"guild_configs": 1, "guild_data": 4, "plugin_states": 1}
        assert json.dumps(await export_document(app), sort_keys=True) == json.dumps(
            first, sort_keys=True
        )
        # a guild document replaces that guild only
        await app.services.get("guild_data").set(2, "fun", "extra", 1)
        await app.services.get("guild_data").set(1, "fun", "extra", 1)
        await import_document(app, guild2)
        after = await export_document(app)
        keys = {(r["guild_id"], r["key"]) for r in after["sections"]["guild_data"]}
        assert (2, "extra") not in keys and (1, "extra") in keys
    finally:
        await app.stop()


async def test_a_corrupt_import_changes_nothing_and_names_every_problem(
    project, database, tmp_path, capsys
) -> None:
    app = await started(project, database)
    try:
        await fill(app)
    finally:
        await app.stop()
    os.chdir(project.root)
    assert await asyncio.to_thread(main, ["export", "-o", str(tmp_path / "good.json")]) == 0
    doc = json.loads((tmp_path / "good.json").read_text())
    before = (tmp_path / "good.json").read_text()

    doc["version"] = 99
    doc["sections"]["guild_data"][0]["guild_id"] = "one"
    doc["sections"]["guild_data"][1]["key"] = None
    doc["sections"]["guild_data"][2]["colour"] = "red"
    doc["sections"]["guild_data"].append(dict(doc["sections"]["guild_data"][3]))
    doc["sections"]["plugin_states"][0]["enabled"] = "yes"
    doc["sections"]["plugin_states"][0]["updated_at"] = "last tuesday"
    doc["sections"]["mystery"] = []
    doc["sections"]["guild_configs"] = [{"settings": {}}]
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["import", str(tmp_path / "bad.json")]) == 1
    err = capsys.readouterr().err
    for fragment in [
        "nothing changed",
        "$.version: this Wisp reads version 1, got 99",
        "$.sections.guild_data[0].guild_id: expected an integer, got 'one'",
        "$.sections.guild_data[1].key: must not be null",
        "$.sections.guild_data[2].colour: unknown field",
        "$.sections.guild_data[4]: same key as $.sections.guild_data[3]",
        "$.sections.plugin_states[0].enabled: expected true or false, got 'yes'",
        "$.sections.plugin_states[0].updated_at: not an ISO 8601 date-time: 'last tuesday'",
        "$.sections.mystery: no loaded plugin reads this section",
        "$.sections.guild_configs[0].guild_id: missing",
    ]:
        assert fragment in err, (fragment, err)
    assert await asyncio.to_thread(main, ["export", "-o", str(tmp_path / "again.json")]) == 0
    assert (tmp_path / "again.json").read_text() == before

    (tmp_path / "garbage.json").write_text('{"format": "wisp-export",')
    assert await asyncio.to_thread(main, ["import", str(tmp_path / "garbage.json")]) == 1
    assert "$: not valid JSON" in capsys.readouterr().err

    # --dry-run validates and writes nothing
    good = json.loads(before)
    good["sections"]["guild_data"] = []
    (tmp_path / "empty.json").write_text(json.dumps(good))
    assert await asyncio.to_thread(main, ["import", "--dry-run", str(tmp_path / "empty.json")]) == 0
    assert "would import" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["export", "-o", str(tmp_path / "still.json")]) == 0
    assert (tmp_path / "still.json").read_text() == before


@pytest.mark.needs_plugin("basics")
def test_blocking_storage_leaves_the_rest_working(project, site) -> None:
    make_notes_plugin(site, "blocked1")
    app = project.app(autoload=True, block=["storage"]).configure()
    names = [p.name for p in app.pluginmanager.plugins()]
    assert "storage" not in names and "basics" in names
    [failure] = [f for f in app.pluginmanager.failures if f.name == "notes_blocked1"]
    assert "requires plugin 'storage', which is blocked (-p no:storage)" in failure.message


async def test_a_long_import_shows_progress(project, database, tmp_path, capsys) -> None:
    rows = [
        {
            "guild_id": 3,
            "namespace": "bulk",
            "key": f"k{i:05d}",
            "value": i,
            "updated_at": "2026-01-01T00:00:00+00:00",
        }
        for i in range(2500)
    ]
    doc = {"format": "wisp-export", "version": 1, "guild_id": 3, "sections": {"guild_data": rows}}
    (tmp_path / "bulk.json").write_text(json.dumps(doc))
    app = await started(project, database)
    await app.stop()
    os.chdir(project.root)
    assert await asyncio.to_thread(main, ["import", str(tmp_path / "bulk.json")]) == 0
    captured = capsys.readouterr()
    assert "imported guild_data: 2500" in captured.out
    for line in (
        "guild_data: 1000/2500 rows",
        "guild_data: 2000/2500 rows",
        "guild_data: 2500/2500 rows",
    ):
        assert line in captured.err
    assert (
        await asyncio.to_thread(main, ["export", "--guild", "3", "-o", str(tmp_path / "out.json")])
        == 0
    )
    exported = json.loads((tmp_path / "out.json").read_text())
    assert exported["sections"]["guild_data"] == rows
    assert exported["sections"]["guild_configs"] == exported["sections"]["plugin_states"] == []


async def test_guild_documents_never_touch_global_sections(project, database) -> None:
    from wisp.plugins.storage.models import GuildConfig
    from wisp.plugins.storage.transfer import (
        ImportRejected,
        export_document,
        import_document,
        table_section,
    )

    class Global:
        @wisp.hookimpl
        def wisp_export_sections(self):
            return [table_section(GuildConfig, name="all_configs", guild_column=None)]

    app = configure(project, database, "auto_migrate = true")
    app.register(Global(), "global")
    async with app:
        await fill(app)
        doc = await export_document(app, guild_id=5)
        assert doc["sections"]["all_configs"] == []
        await import_document(app, doc)
        assert len((await export_document(app))["sections"]["all_configs"]) == 1
        # Rows may leave out defaulted columns, each row its own way.
        doc["sections"]["guild_data"] = [
            {"guild_id": 5, "namespace": "n", "key": "a", "value": 1},
            {
                "guild_id": 5,
                "namespace": "n",
                "key": "b",
                "value": 2,
                "updated_at": "2026-01-01T00:00:00+00:00",
            },
        ]
        doc["sections"]["all_configs"] = [{"guild_id": 5, "settings": {}}]
        with pytest.raises(ImportRejected) as info:
            await import_document(app, doc)
        assert info.value.problems == [
            "$.sections.all_configs: a global section cannot be imported from a guild "
            "document; import a full export instead"
        ]
        doc["sections"]["all_configs"] = []
        await import_document(app, doc)
        assert await app.services.get("guild_data").get_all(5, "n") == {"a": 1, "b": 2}


def test_relative_sqlite_paths_mean_the_project_directory(project, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WISP_STORAGE__URL", "sqlite+aiosqlite:///data/bot.db")
    app = project.app(plugins=["storage"]).configure()
    db = app.stash[storage.database_key]
    assert db.url == f"sqlite+aiosqlite:///{project.root / 'data' / 'bot.db'}"
    assert not db.embedded
    monkeypatch.setenv("WISP_DATABASE_URL", "sqlite+aiosqlite:///other.db")
    app = project.app(plugins=["storage"]).configure()
    assert app.stash[storage.database_key].url.endswith("/proj/other.db")  # the alias wins
