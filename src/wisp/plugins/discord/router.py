"""Discord events to Wisp event handlers: filters, per-guild switches, anti-abuse.

Every routed event runs its handlers in priority order through the kernel's
``app.emit`` (one context and pipeline per handler, failures isolated).  Before
that the router drops what must not run: the bot's own actions, bots and DMs
where a handler says so, plugins switched off for the guild (``plugin_state``,
when the storage plugin runs), non-essential handlers in a guild in safe mode,
and bursts of identical events, which usually mean two bots answering each
other: such a burst puts the guild in safe mode for a while.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

from loguru import logger

from wisp.plugins.discord.config import DiscordConfig

if TYPE_CHECKING:
    import wisp
    from wisp.responses import Outcome
    from wisp.targets import EventHandler

__all__ = ["EventRouter"]

MAX_TRACKED = 10_000


class EventRouter:
    """Routes one Discord event at a time; holds the anti-abuse state."""

    def __init__(self, app: wisp.Wisp, config: DiscordConfig) -> None:
        self.app = app
        self.config = config
        self.bot_user_id: int | None = None
        self._recent: OrderedDict[Hashable, deque[float]] = OrderedDict()
        self._safe_until: dict[int, float] = {}

    # -- safe mode --------------------------------------------------------------

    def in_safe_mode(self, guild_id: int) -> bool:
        until = self._safe_until.get(guild_id)
        if until is None:
            return False
        if time.monotonic() >= until:
            del self._safe_until[guild_id]
            logger.info("guild {} leaves safe mode", guild_id)
            return False
        return True

    def set_safe_mode(self, guild_id: int, minutes: float | None, reason: str) -> None:
        """Stop non-essential handlers in a guild for ``minutes`` (``None``: lift it)."""
        if minutes is None:
            self._safe_until.pop(guild_id, None)
            logger.warning("guild {} safe mode lifted: {}", guild_id, reason)
            return
        self._safe_until[guild_id] = time.monotonic() + minutes * 60
        logger.warning("guild {} in safe mode for {} min: {}", guild_id, minutes, reason)

    def _burst(self, key: Hashable, guild_id: int | None) -> bool:
        now = time.monotonic()
        window = self._recent.get(key)
        if window is None:
            window = self._recent[key] = deque()
            if len(self._recent) > MAX_TRACKED:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(key)
        while window and now - window[0] > self.config.loop_window:
            window.popleft()
        window.append(now)
        if len(window) < self.config.loop_threshold:
            return False
        if len(window) == self.config.loop_threshold and guild_id is not None:
            self.set_safe_mode(
                guild_id,
                self.config.safe_mode_minutes,
                f"loop suspected: {len(window)} identical events within "
                f"{self.config.loop_window}s ({key!r})",
            )
        elif len(window) == self.config.loop_threshold:
            logger.warning("loop suspected outside a guild: {!r}; dropping", key)
        return True

    # -- routing ----------------------------------------------------------------

    async def route(
        self,
        event: str,
        payload: Mapping[str, Any],
        *,
        guild_id: int | None,
        channel_id: int | None = None,
        actor: Any = None,
        fingerprint: Hashable = None,
        raw: Any = None,
    ) -> list[Outcome]:
        """Run the handlers of ``event`` that should see this one.

        ``actor`` is the user or member who caused the event (for bot and
        self filtering); ``fingerprint`` identifies "the same event again" for
        loop detection: events without one (joins, guild changes) never count.
        """
        handlers = self.app.handlers_for(event)
        if not handlers:
            return []
        actor_id = getattr(actor, "id", None)
        if actor_id is not None and actor_id == self.bot_user_id:
            logger.debug("ignored {} caused by the bot itself (loop guard)", event)
            return []
        if fingerprint is not None and self._burst(fingerprint, guild_id):
            logger.debug("dropped {} in guild {}: burst of identical events", event, guild_id)
            return []
        actor_is_bot = bool(getattr(actor, "bot", False))
        safe = guild_id is not None and self.in_safe_mode(guild_id)
        states = (
            self.app.services.get("plugin_state") if "plugin_state" in self.app.services else None
        )
        selected: list[EventHandler] = []
        for h in handlers:
            if h.ignore_bots and actor_is_bot:
                continue
            if guild_id is None and not h.allow_dms:
                continue
            if safe and not h.metadata.get("essential", False):
                continue
            if (
                guild_id is not None
                and states is not None
                and h.plugin is not None
                and not await states.is_enabled(h.plugin, guild_id)
            ):
                continue
            selected.append(h)
        if not selected:
            return []
        return await self.app.emit(
            event,
            payload,
            guild_id=guild_id,
            channel_id=channel_id,
            user_id=actor_id,
            raw=raw,
            handlers=selected,
        )
