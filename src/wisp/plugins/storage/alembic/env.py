"""Alembic environment for Wisp: the connection and metadata come from the caller.

Wisp runs Alembic programmatically (``wisp migrate``); it passes a live
connection, the shared metadata and a filter limited to the tables of the
plugins concerned through ``config.attributes``.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context

from wisp.plugins.storage.api import JSONDocument

config = context.config


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Render Wisp's column types by name, with their import."""
    if type_ == "type" and isinstance(obj, JSONDocument):
        autogen_context.imports.add("from wisp.plugins.storage.api import JSONDocument")
        return "JSONDocument()"
    return False


connection = config.attributes["connection"]

context.configure(
    connection=connection,
    target_metadata=config.attributes["metadata"],
    include_object=config.attributes["include_object"],
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    render_item=render_item,
    version_table_schema=config.attributes.get("schema") or None,
)

with context.begin_transaction():
    context.run_migrations()
