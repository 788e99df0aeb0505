"""Storage: SQLAlchemy async, per-plugin Alembic branches, guild data, plugin state.

Bundled plugin ``storage``; block it with ``-p no:storage``.  Services:
``db`` (:class:`Database`), ``guild_data`` and ``plugin_state``.  Other
plugins add tables with ``wisp_storage_models`` and export sections with
``wisp_export_sections`` (see :mod:`wisp.plugins.storage.hookspecs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

import wisp
from wisp.plugins.storage import hookspecs
from wisp.plugins.storage.config import StorageConfig

# SQLAlchemy and Alembic load only once the application is configured (or a
# `wisp migrate`/`export`/`import` runs), so `wisp --help` never pays for them.
if TYPE_CHECKING:
    from wisp.pluginmanager import WispPluginManager
    from wisp.plugins.storage.api import ExportSection, ModelSet
    from wisp.plugins.storage.database import Database
    from wisp.plugins.storage.migrations import Branch, Migrator

WISP_PLUGIN = wisp.PluginMetadata(
    name="storage",
    description="SQLAlchemy async storage, per-plugin Alembic branches, guild data, "
    "plugin state, export and import.",
    api=">=1.0,<2",
    data="Per-guild settings and plugin switches; guild data rows other plugins store, "
    "of which keys 'user:<id>' and 'user:<id>:...' belong to that user.",
    user_data=True,
)

HERE = Path(__file__).parent

#: The branches (plugins with tables) found at configure time.
branches_key: wisp.StashKey[list[Branch]] = wisp.StashKey()
#: The ``db`` service of this application.
database_key: wisp.StashKey[Database] = wisp.StashKey()


@wisp.hookimpl
def wisp_addhooks(pluginmanager: WispPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"storage": StorageConfig}


@wisp.hookimpl
def wisp_storage_models() -> ModelSet:
    from wisp.plugins.storage.api import ModelSet
    from wisp.plugins.storage.models import CORE_MODELS

    return ModelSet(CORE_MODELS, HERE / "migrations", branch="storage")


@wisp.hookimpl
def wisp_configure(app: wisp.Wisp) -> None:
    from wisp.plugins.storage.api import ModelSet, branch_name
    from wisp.plugins.storage.database import Database
    from wisp.plugins.storage.migrations import Branch

    branches: list[Branch] = []
    owners: dict[str, str] = {}
    for plugin, models in app.pluginmanager.results("wisp_storage_models"):
        if not isinstance(models, ModelSet):
            raise wisp.PluginError(
                f"plugin {plugin!r} returned {models!r} from wisp_storage_models; "
                "expected wisp.plugins.storage.api.ModelSet"
            )
        tables = tuple(models.tables())
        for table in tables:
            if table.name in owners:
                raise wisp.PluginError(
                    f"table {table.name!r} is claimed by plugin {owners[table.name]!r} "
                    f"and by plugin {plugin!r}"
                )
            owners[table.name] = plugin
        label = models.branch or branch_name(plugin)
        branches.append(Branch(plugin, label, Path(models.migrations), tables))
    branches.sort(key=lambda b: b.label)
    app.stash[branches_key] = branches
    app.stash[database_key] = Database(app.config.section(StorageConfig), app.rootdir)


def migrator(app: wisp.Wisp) -> Migrator:
    """The migrator for this application's database and branches (no start needed)."""
    from wisp.plugins.storage.migrations import Migrator

    branches: list[Branch] = app.stash[branches_key]
    return Migrator(app.stash[database_key], branches)


def _default_enabled(app: wisp.Wisp) -> Any:
    def lookup(plugin: str) -> bool:
        try:
            module = app.pluginmanager.info(plugin).plugin
        except KeyError:
            return True
        return bool(getattr(module, "wisp_default_enabled", True))

    return lookup


class _Migrations(wisp.BaseService):
    """Refuses to start on pending migrations, or applies them where allowed."""

    name = "migrations"
    requires = ("db",)

    def __init__(self, app: wisp.Wisp) -> None:
        super().__init__()
        self.app = app

    async def start(self) -> None:
        from wisp.plugins.storage.migrations import MigrationError

        db = self.app.stash[database_key]
        m = migrator(self.app)
        pending = await m.pending()
        if pending:
            auto = db.config.auto_migrate
            if auto is None:
                auto = db.embedded
            if not auto:
                raise MigrationError(
                    "pending migrations: "
                    + "; ".join(s.describe() for s in pending)
                    + "; run `wisp migrate` first"
                )
            why = "the embedded database" if db.embedded else "auto_migrate is on"
            logger.info(
                "applying pending migrations ({}): {}",
                why,
                "; ".join(s.describe() for s in pending),
            )
            await m.upgrade()
        await super().start()

    async def health(self) -> wisp.Health:
        status = await migrator(self.app).status()
        pending = [s for s in status if s.pending]
        if pending:
            return wisp.Health(False, "pending: " + "; ".join(s.describe() for s in pending))
        return wisp.Health(True, f"{len(status)} branch(es) at head")


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    from wisp.plugins.storage.guilddata import GuildDataService
    from wisp.plugins.storage.pluginstate import PluginStateService

    db = app.stash[database_key]
    return [
        db,
        _Migrations(app),
        GuildDataService(db),
        PluginStateService(db, _default_enabled(app)),
    ]


@wisp.hookimpl
def wisp_export_sections(app: wisp.Wisp) -> Sequence[ExportSection]:
    from wisp.plugins.storage.transfer import core_sections

    return core_sections()


@wisp.hookimpl
async def wisp_delete_user_data(
    app: wisp.Wisp, user_id: int, guild_id: int | None
) -> dict[str, int] | None:
    # Guild data is keyed by guild, namespace and key: a user's rows are the
    # ones whose key is theirs by the documented 'user:<id>' convention.
    # plugin_states and guild_configs hold nothing about users.
    db = app.stash.get(database_key, None)
    if db is None:
        return None
    from sqlalchemy import delete, or_

    from wisp.plugins.storage.models import GuildData

    query = delete(GuildData).where(
        or_(GuildData.key == f"user:{user_id}", GuildData.key.startswith(f"user:{user_id}:"))
    )
    if guild_id is not None:
        query = query.where(GuildData.guild_id == guild_id)
    async with db.transaction() as s:
        result: Any = await s.execute(query)
    return {"guild data rows": int(result.rowcount or 0)}


@wisp.hookimpl
def wisp_cli_commands(app: wisp.Wisp) -> Sequence[wisp.CliCommand]:
    from wisp.plugins.storage.cli import COMMANDS

    return COMMANDS
