"""Every piece of discord.py's internals the event streams lean on.

Gateway side: discord.py's websocket hands each dispatch's ``d`` to
``client._connection.parsers[EVENT]`` (``DiscordWebSocket.from_client`` shares
that dict).  :func:`install_publisher` replaces the entries of published events
with a function that publishes the raw dict and builds no object, and wraps
the guild-structure events so the gateway can keep a guild snapshot for workers.

Worker side: a REST-only client (logged in, no gateway) gets each consumed
dispatch through the same parser, so handlers receive the objects discord.py
would build (``discord.Message``, ``discord.Member``, ...).  Guilds come from
the gateway's snapshots through ``ConnectionState._add_guild_from_data``.
``Client._schedule_event`` is wrapped to learn which listener tasks one
dispatch started, so the worker acks only after they finished.

Nothing else in Wisp touches these internals.  :func:`check_internals` fails
loudly when an upgrade changes them (the contract test and both sides call
it); :data:`CHECKED_VERSIONS` lists the discord.py releases it was read against.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
from collections.abc import Callable
from typing import Any

import discord
from discord.gateway import DiscordWebSocket
from discord.state import ConnectionState

__all__ = [
    "CHECKED_VERSIONS",
    "STATE_EVENTS",
    "Feeder",
    "InternalsChanged",
    "check_internals",
    "install_publisher",
]

#: discord.py releases this module was read against.
CHECKED_VERSIONS = ("2.7.1",)

#: Dispatches that change a guild's structure: the gateway handles them and
#: updates its snapshot for workers.
STATE_EVENTS = frozenset(
    {
        "GUILD_CREATE",
        "GUILD_UPDATE",
        "GUILD_DELETE",
        "CHANNEL_CREATE",
        "CHANNEL_UPDATE",
        "CHANNEL_DELETE",
        "GUILD_ROLE_CREATE",
        "GUILD_ROLE_UPDATE",
        "GUILD_ROLE_DELETE",
    }
)

#: Parsers the published and state events go through.
_PARSERS = (
    "parse_message_create",
    "parse_message_update",
    "parse_message_delete",
    "parse_message_reaction_add",
    "parse_message_reaction_remove",
    "parse_guild_member_add",
    "parse_guild_member_remove",
    "parse_guild_member_update",
    "parse_interaction_create",
    "parse_guild_create",
    "parse_channel_create",
    "parse_guild_role_create",
)

#: Listener tasks started by the dispatch being fed in this context.
_started: contextvars.ContextVar[list[asyncio.Task[Any]] | None] = contextvars.ContextVar(
    "wisp_eventstream_started", default=None
)


class InternalsChanged(RuntimeError):
    """discord.py changed an internal the event streams use."""


def check_internals() -> None:
    """Raise :class:`InternalsChanged`, naming the piece, unless every internal used
    here is still where and what it was in :data:`CHECKED_VERSIONS`."""
    problems: list[str] = []
    for name in _PARSERS:
        if not callable(getattr(ConnectionState, name, None)):
            problems.append(f"ConnectionState.{name} is gone")
    if not callable(getattr(ConnectionState, "_add_guild_from_data", None)):
        problems.append("ConnectionState._add_guild_from_data is gone")
    init = inspect.getsource(ConnectionState.__init__)
    if "self.parsers" not in init or "parse_" not in init:
        problems.append("ConnectionState no longer builds its parsers dict in __init__")
    if "_discord_parsers = client._connection.parsers" not in inspect.getsource(
        DiscordWebSocket.from_client
    ):
        problems.append("DiscordWebSocket.from_client no longer shares client._connection.parsers")
    schedule = getattr(discord.Client, "_schedule_event", None)
    if schedule is None:
        problems.append("Client._schedule_event is gone")
    else:
        params = list(inspect.signature(schedule).parameters)
        if params[:3] != ["self", "coro", "event_name"]:
            problems.append(f"Client._schedule_event's parameters changed: {params}")
        if "self._schedule_event(" not in inspect.getsource(discord.Client.dispatch):
            problems.append("Client.dispatch no longer goes through _schedule_event")
    if problems:
        raise InternalsChanged(
            f"discord.py {discord.__version__} changed internals the event streams use "
            f"(checked against {', '.join(CHECKED_VERSIONS)}): "
            + "; ".join(problems)
            + ". Pin discord.py to a checked version or update "
            "wisp/plugins/eventstream/discordpy.py."
        )


def install_publisher(
    client: discord.Client,
    events: frozenset[str],
    publish: Callable[[str, dict[str, Any]], None],
    on_state: Callable[[str, dict[str, Any]], None],
) -> None:
    """Make ``client`` publish ``events`` instead of parsing them, and report guild
    structure changes to ``on_state`` (before discord.py parses them as usual).

    Call before the client connects (``wisp_discord_client_created``)."""
    check_internals()
    parsers: dict[str, Callable[[Any], None]] = client._connection.parsers

    def publisher(event: str) -> Callable[[Any], None]:
        def parse(data: Any) -> None:
            publish(event, data)

        return parse

    def keeper(event: str, original: Callable[[Any], None]) -> Callable[[Any], None]:
        def parse(data: Any) -> None:
            on_state(event, data)
            original(data)

        return parse

    for event in events:
        parsers[event] = publisher(event)
    for event in STATE_EVENTS - events:
        parsers[event] = keeper(event, parsers[event])


class Feeder:
    """Feeds consumed dispatches to a logged-in, REST-only client as its gateway would."""

    def __init__(self, client: discord.Client) -> None:
        check_internals()
        self.client = client
        self.parsers: dict[str, Callable[[Any], None]] = client._connection.parsers
        original = client._schedule_event

        def schedule(coro: Any, event_name: str, *args: Any, **kwargs: Any) -> asyncio.Task[Any]:
            task = original(coro, event_name, *args, **kwargs)
            started = _started.get()
            if started is not None:
                started.append(task)
            return task

        client._schedule_event = schedule  # type: ignore[method-assign]

    def has_guild(self, guild_id: int) -> bool:
        return self.client.get_guild(guild_id) is not None

    def add_guild(self, data: dict[str, Any]) -> None:
        """Put (or replace) a guild built from a snapshot in the client's cache."""
        self.client._connection._add_guild_from_data(data)  # type: ignore[arg-type]

    def knows(self, event: str) -> bool:
        return event in self.parsers

    async def feed(self, event: str, data: dict[str, Any]) -> None:
        """Parse one dispatch and wait for every listener it started (the handlers)."""
        started: list[asyncio.Task[Any]] = []
        token = _started.set(started)
        try:
            self.parsers[event](data)
        finally:
            _started.reset(token)
        for task in started:
            # discord.py's _run_event reports a listener's exception itself (on_error).
            with contextlib.suppress(Exception):
                await task
