"""Reaching Discord from wherever a job runs.

In the bot's own process (``wisp run``, ``[jobs] embedded_worker``) the
running bot's client is used.  A separate ``wisp worker`` has no gateway
connection: it logs a REST-only client in with ``[discord] token`` once, and
closes it when the app stops.
"""

from __future__ import annotations

import asyncio
from typing import Any

import discord

import wisp

__all__ = ["DiscordAccess"]


class DiscordAccess:
    """One app's way to Discord's REST API."""

    def __init__(self, app: wisp.Wisp) -> None:
        self.app = app
        self._rest: discord.Client | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> discord.Client:
        if "discord" in self.app.services:
            bot: Any = getattr(self.app.services.get("discord"), "bot", None)
            if isinstance(bot, discord.Client) and not bot.is_closed():
                return bot
        async with self._lock:
            if self._rest is None:
                client = discord.Client(intents=discord.Intents.none())
                try:
                    await client.login(self._token())
                except BaseException:
                    await client.close()
                    raise
                self._rest = client
            return self._rest

    def _token(self) -> str:
        try:
            token = str(self.app.config.section("discord").token)
        except Exception:
            token = ""
        if not token:
            raise RuntimeError(
                "no Discord connection in this process and no [discord] token "
                "(DISCORD_TOKEN) to reach Discord's REST API with"
            )
        return token

    async def close(self) -> None:
        if self._rest is not None:
            client, self._rest = self._rest, None
            await client.close()
