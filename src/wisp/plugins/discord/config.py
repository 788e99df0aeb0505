"""``[discord]`` in wisp.toml."""

from __future__ import annotations

from typing import Any

import attrs

from wisp.config import positive

#: Intent names accepted in ``intents`` (discord.Intents flags).
KNOWN_INTENTS = (
    "guilds",
    "members",
    "moderation",
    "emojis_and_stickers",
    "integrations",
    "webhooks",
    "invites",
    "voice_states",
    "presences",
    "guild_messages",
    "dm_messages",
    "guild_reactions",
    "dm_reactions",
    "guild_typing",
    "dm_typing",
    "message_content",
    "guild_scheduled_events",
    "auto_moderation",
    "polls",
)


def _intents(_: Any, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    unknown = [v for v in value if v not in KNOWN_INTENTS]
    if unknown:
        raise ValueError(
            f"unknown intent(s) {', '.join(unknown)}; known: {', '.join(KNOWN_INTENTS)}"
        )


def _url(*schemes: str) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
        if value is None:
            return
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in schemes or not rest:
            raise ValueError(f"{value!r} is not a {' or '.join(schemes)} URL")

    return check


def _shards(_: Any, attribute: attrs.Attribute[Any], value: list[int] | None) -> None:
    if value is not None and any(v < 0 for v in value):
        raise ValueError("shard ids are 0 or more")


@attrs.frozen
class DiscordConfig:
    """How to reach Discord and how commands and events reach Wisp."""

    #: Bot token; also ``DISCORD_TOKEN``.  Not needed offline.
    token: str = attrs.field(default="", metadata={"env": "DISCORD_TOKEN", "secret": True})
    #: Prefix for message commands (``!roll 6``); empty turns them off.
    prefix: str = "!"
    intents: list[str] = attrs.field(
        factory=lambda: [
            "guilds",
            "members",
            "guild_messages",
            "dm_messages",
            "guild_reactions",
            "message_content",
        ],
        validator=_intents,
    )
    #: Run an AutoShardedBot with this many shards (unset: one plain Bot).
    shard_count: int | None = attrs.field(default=None, validator=positive)
    #: The shards this process runs (unset: all of ``shard_count``).
    shard_ids: list[int] | None = attrs.field(default=None, validator=_shards)
    #: REST base, for a REST proxy in front of Discord (default: Discord's own,
    #: ``https://discord.com/api/v10``).
    api_url: str | None = attrs.field(default=None, validator=_url("http", "https"))
    #: Gateway address, for a gateway proxy (default: Discord's own).
    gateway_url: str | None = attrs.field(default=None, validator=_url("ws", "wss"))
    #: Seconds ``wisp run`` waits for every shard of this process to be READY
    #: before it gives up.  Unset: 60 plus 6 per shard it runs (Discord spaces
    #: IDENTIFYs 5 s apart per bucket, and processes sharing a token queue).
    ready_timeout: float | None = attrs.field(default=None, validator=positive)
    #: Sync slash commands to this guild only (instant, for development).
    sync_guild: int | None = None
    #: Seconds before a slow slash command is deferred ("thinking...").
    defer_after: float = attrs.field(default=2.5, validator=positive)
    #: Identical events in one channel within ``loop_window`` seconds that mark a loop.
    loop_threshold: int = attrs.field(default=5, validator=positive)
    loop_window: float = attrs.field(default=10.0, validator=positive)
    #: Minutes a guild stays in safe mode after a loop.
    safe_mode_minutes: float = attrs.field(default=10.0, validator=positive)

    def __attrs_post_init__(self) -> None:
        if self.shard_ids is not None:
            if self.shard_count is None:
                raise ValueError("shard_ids needs shard_count")
            bad = [i for i in self.shard_ids if i >= self.shard_count]
            if bad:
                raise ValueError(f"shard_ids {bad} are not below shard_count {self.shard_count}")
