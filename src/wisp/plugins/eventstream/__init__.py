"""Event streams: gateway processes publish Discord dispatches, workers handle them.

Bundled plugin ``eventstream``; block it with ``-p no:eventstream``.  With
``[events] mode = "publish"``, ``wisp run`` connects to the gateway and
publishes the dispatches in ``[events] events`` to a stream per shard instead
of handling them; ``wisp events work`` (or ``mode = "consume"``) logs in for
REST only, consumes its share of the streams and runs the same event router
and commands.  Transports are plugins answering ``wisp_event_transport``
(``redisstreams``, ``nats``).  ``wisp events status`` shows streams, pending
counts and lag.  See docs/scaling-out.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from loguru import logger

import wisp
from wisp.plugins.eventstream.api import EventTransport, TransportError
from wisp.plugins.eventstream.config import EventsConfig

__all__ = ["EventStreamService", "EventsConfig", "enable", "enable_worker"]

WISP_PLUGIN = wisp.PluginMetadata(
    name="eventstream",
    description="Split gateway and handlers: publish Discord dispatches to a stream per "
    "shard; workers handle them (wisp events work).",
    api=">=1.0,<2",
    commands=("wisp events",),
    data="Discord dispatches (messages, members, reactions, interactions) while they wait "
    "in the stream, bounded by the transport's trimming; a snapshot of each guild's "
    "channels and roles.",
)

#: Set by ``enable``: this process uses the transport (publish, work, status).
enabled_key = wisp.StashKey[bool]()
#: Set by ``enable_worker``: the worker service to run.
worker_key = wisp.StashKey[Any]()


def shard_count(app: wisp.Wisp) -> int:
    """``[events] shard_count``, else ``[discord] shard_count``, else 1."""
    config: EventsConfig = app.config.section(EventsConfig)
    if config.shard_count is not None:
        return config.shard_count
    if app.pluginmanager.has_plugin("discord"):
        discord_config: Any = app.config.section("discord")
        return int(discord_config.shard_count or 1)
    return 1


class EventStreamService(wisp.BaseService):
    """Holds the transport the ``wisp_event_transport`` hook gave; in publish mode
    writes the gateway's guild snapshots."""

    name = "eventstream"
    after: Sequence[str] = ("redis",)

    def __init__(self, app: wisp.Wisp, config: EventsConfig) -> None:
        super().__init__()
        self.app = app
        self.config = config
        #: Asked for when the service is made, so a publisher installed before the
        #: service starts (services start in any order) can queue into it.
        self.transport: EventTransport | None = self._resolve()
        self.publisher: Any = None

    def _resolve(self) -> EventTransport | None:
        for plugin, result in self.app.pluginmanager.results("wisp_event_transport", app=self.app):
            if not isinstance(result, EventTransport):
                raise wisp.PluginError(
                    f"plugin {plugin!r}: wisp_event_transport returned "
                    f"{type(result).__name__}, not an EventTransport"
                )
            return result
        return None

    async def start(self) -> None:
        if self.transport is None:
            raise wisp.ConfigError([_no_transport(self.app, self.config)])
        await self.transport.start()
        if self.publisher is not None:
            self.publisher.start()
        await super().start()

    async def stop(self) -> None:
        if self.publisher is not None:
            # Services may stop in either order: close the gateway first, so no
            # dispatch arrives after the last flush (discord.py's close is idempotent).
            await self.publisher.client.close()
            await self.publisher.stop()
        if self.transport is not None:
            await self.transport.close()
        await super().stop()

    async def health(self) -> wisp.Health:
        if self.transport is None or not self.started:
            return wisp.Health(False, "not started")
        published = f"; {self.publisher.published} published" if self.publisher else ""
        return wisp.Health(True, f"transport {self.transport.name}{published}")


def _no_transport(app: wisp.Wisp, config: EventsConfig) -> str:
    plugin = {"redis": "redisstreams", "nats": "nats"}.get(config.transport)
    hint = (
        f" (plugin {plugin!r} is not loaded)"
        if plugin and not app.pluginmanager.has_plugin(plugin)
        else ""
    )
    return (
        f"[events] transport = {config.transport!r}: no plugin provides this event "
        f"transport{hint}; bundled: 'redis' (plugin redisstreams), 'nats' (plugin nats)"
    )


def enable(app: wisp.Wisp) -> None:
    """Make ``app.start()`` start the transport (``mode`` publish and consume do this)."""
    app.stash[enabled_key] = True


def enable_worker(
    app: wisp.Wisp,
    *,
    offline: bool = False,
    consumer: str | None = None,
    shards: Sequence[int] | None = None,
) -> Any:
    """Make ``app.start()`` run a worker: the bot logged in for REST only (no gateway)
    consuming ``[events] group``'s share of the shard streams."""
    app.configure()
    if not app.pluginmanager.has_plugin("discord"):
        raise wisp.PluginError("an events worker needs the discord plugin, which is not loaded")
    from wisp.plugins.discord import enable as enable_discord
    from wisp.plugins.eventstream.worker import EventWorker

    count = shard_count(app)
    bad = [s for s in shards or () if not 0 <= s < count]
    if bad:
        raise wisp.ConfigError([f"shards {bad} are not below the shard count {count}"])
    enable(app)
    enable_discord(app, offline=offline, gateway=False)
    worker = EventWorker(
        app, app.config.section(EventsConfig), count, consumer=consumer, shards=shards
    )
    app.stash[worker_key] = worker
    return worker


@wisp.hookimpl
def wisp_addhooks(pluginmanager: Any) -> None:
    from wisp.plugins.eventstream import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"events": EventsConfig}


@wisp.hookimpl
def wisp_configure(app: wisp.Wisp) -> None:
    config: EventsConfig = app.config.section(EventsConfig)
    if config.mode == "local":
        return
    found = [r for _, r in app.pluginmanager.results("wisp_event_transport", app=app)]
    if not found:
        # Say so before `wisp run` connects anything.
        raise wisp.ConfigError([_no_transport(app, config)])


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    config: EventsConfig = app.config.section(EventsConfig)
    if config.mode == "local" and not app.stash.get(enabled_key, False):
        return []
    services: list[wisp.Service] = [EventStreamService(app, config)]
    worker = app.stash.get(worker_key, None)
    if worker is not None:
        services.append(worker)
    return services


@wisp.hookimpl(optionalhook=True)  # the discord plugin may be blocked
def wisp_discord_client_created(app: wisp.Wisp, client: Any) -> None:
    config: EventsConfig = app.config.section(EventsConfig)
    if config.mode != "publish" or app.stash.get(worker_key, None) is not None:
        return
    if "eventstream" not in app.services:
        return  # a client built outside `wisp run` (`wisp commands sync`): nothing to publish
    from wisp.plugins.eventstream.discordpy import install_publisher
    from wisp.plugins.eventstream.publisher import Publisher

    service: EventStreamService = app.services.get("eventstream")
    transport = service.transport
    if transport is None:
        raise TransportError(
            f"[events] transport = {config.transport!r}: no plugin provides this event transport"
        )
    publisher = Publisher(client, transport, shard_count(app), app)
    install_publisher(client, frozenset(config.events), publisher.publish, publisher.on_state)
    service.publisher = publisher
    if service.started:
        publisher.start()
    logger.info(
        "events: publishing {} to {} over {} shard stream(s); handlers run in workers",
        ", ".join(config.events),
        transport.name,
        publisher.shard_count,
    )


@wisp.hookimpl(tryfirst=True)
async def wisp_run(app: wisp.Wisp, args: argparse.Namespace) -> int | None:
    config: EventsConfig = app.config.section(EventsConfig)
    if config.mode != "consume":
        return None
    from wisp.plugins.eventstream.cli import work

    return await work(app, offline=False, consumer=None, shards=None, prog="wisp run")


@wisp.hookimpl
def wisp_cli_commands() -> Sequence[wisp.CliCommand]:
    from wisp.plugins.eventstream.cli import COMMANDS

    return COMMANDS
