"""Hooks the cluster plugin adds (through ``wisp_addhooks``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from wisp.markers import hookspec

if TYPE_CHECKING:
    from wisp.app import Wisp


@hookspec
def wisp_cluster_queries(app: Wisp) -> Mapping[str, Callable[[Wisp], Awaitable[Any]]] | None:
    """Return admin queries by name: ``async def query(app) -> JSON``.

    ``wisp cluster query NAME`` sends NAME over Redis pub/sub; every gateway
    process runs its function of that name and answers with the JSON it
    returns.  Only registered names run (never code sent by the caller).  Two
    plugins registering one name is a start-up error naming both.

    :param app: The application.

    ``wispconf.py`` files: all.
    """
