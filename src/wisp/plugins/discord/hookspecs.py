"""Hooks the discord plugin adds (through ``wisp_addhooks``).

Both run once, when the bot is built at start-up: they shape the discord.py
client (sharding, identify pacing, HTTP tracing, proxies), never an event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from wisp.markers import hookspec

if TYPE_CHECKING:
    from wisp.app import Wisp


@hookspec
def wisp_discord_client_options(app: Wisp) -> Mapping[str, Any] | None:
    """Return keyword arguments for the discord.py bot this process builds.

    Merged into the arguments of ``commands.Bot`` / ``commands.AutoShardedBot``
    (``shard_ids``, ``shard_count``, ``http_trace``, ``proxy``, ...).  A
    ``shard_count`` turns the bot into an ``AutoShardedBot``.  Two plugins
    giving one key is a start-up error naming both.

    :param app: The application.

    ``wispconf.py`` files: all.
    """


@hookspec
def wisp_discord_client_created(app: Wisp, client: Any) -> None:
    """The bot was built; adjust it before it logs in.

    For what the constructor does not take, such as ``before_identify_hook``.
    Called once per build, in plugin order.

    :param app: The application.
    :param client: The ``commands.Bot`` or ``commands.AutoShardedBot``.

    ``wispconf.py`` files: all.
    """
