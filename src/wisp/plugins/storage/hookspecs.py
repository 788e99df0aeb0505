"""Hooks the storage plugin adds (through ``wisp_addhooks``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from wisp.markers import hookspec

if TYPE_CHECKING:
    from wisp.app import Wisp
    from wisp.plugins.storage.api import ExportSection, ModelSet


@hookspec
def wisp_storage_models() -> ModelSet | None:
    """Return the tables this plugin owns and the folder of their migrations.

    The tables must be declared on :class:`wisp.plugins.storage.api.Model`.
    ``wisp migrate new PLUGIN`` autogenerates into that folder; the plugin's
    revisions form their own Alembic branch.

    ``wispconf.py`` files: all.
    """


@hookspec
def wisp_export_sections(app: Wisp) -> Sequence[ExportSection] | None:
    """Return the sections this plugin adds to ``wisp export`` and ``wisp import``.

    :param app: The application.

    ``wispconf.py`` files: all.
    """
