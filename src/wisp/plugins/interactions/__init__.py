"""HTTP interactions: Discord's Interactions Endpoint, served on aiohttp.

Bundled plugin ``interactions``; block it with ``-p no:interactions``.
``wisp serve-interactions`` logs the bot in for REST only (no gateway) and
serves ``[interactions] host:port path``: signed requests (Ed25519), PING
answered with PONG, each interaction run once across replicas, through the
same commands and pipeline as on the gateway.  :mod:`.api` has the
follow-up and job hand-off helpers; :mod:`.discordpy` holds every discord.py
internal this needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import wisp
from wisp.plugins.interactions.config import InteractionsConfig

if TYPE_CHECKING:
    from wisp.plugins.interactions.server import InteractionsService

__all__ = ["InteractionsConfig", "enable"]

WISP_PLUGIN = wisp.PluginMetadata(
    name="interactions",
    description="Discord's HTTP Interactions Endpoint: wisp serve-interactions.",
    api=">=1.0,<2",
    permissions=("use_application_commands",),
    commands=("wisp serve-interactions",),
    data="Interaction ids (to run each once) for the token's 15 minutes; jobs it starts "
    "hold the interaction token until they run.",
)

#: The endpoint service, once ``wisp serve-interactions`` (or a test) asked for one.
service_key = wisp.StashKey["InteractionsService"]()


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"interactions": InteractionsConfig}


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    # Only `wisp serve-interactions` (or a test) serves: other commands never listen.
    service = app.stash.get(service_key, None)
    return [service] if service is not None else []


@wisp.hookimpl
def wisp_cli_commands() -> Sequence[wisp.CliCommand]:
    from wisp.plugins.interactions.cli import COMMANDS

    return COMMANDS


def enable(
    app: wisp.Wisp, *, offline: bool = False, port: int | None = None
) -> InteractionsService:
    """Make ``app.start()`` serve the endpoint, with the bot logged in for REST only.

    Needs the ``discord`` plugin.  ``port=0`` takes a free port (tests).
    """
    app.configure()  # loads the plugins (a no-op when done)
    if not app.pluginmanager.has_plugin("discord"):
        raise wisp.PluginError(
            "the interactions endpoint needs the discord plugin, which is not loaded"
        )
    from wisp.plugins.discord import enable as enable_discord
    from wisp.plugins.interactions.server import InteractionsService

    enable_discord(app, offline=offline, gateway=False)
    service = InteractionsService(app, app.config.section(InteractionsConfig), port=port)
    app.stash[service_key] = service
    return service
