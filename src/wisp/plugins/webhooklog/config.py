"""``[webhooklog]`` in wisp.toml."""

from __future__ import annotations

import re
from typing import Any

import attrs

from wisp.config import positive

LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
#: discord.py's ``Webhook.from_url`` shape (discord.com, discordapp.com, canary, ptb).
URL = re.compile(
    r"https://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/api(?:/v\d+)?/webhooks/\d{17,20}/[\w.-]{60,}"
)


def _url(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if value and not URL.fullmatch(value):
        # Never echo the value: it holds the webhook's token.
        raise ValueError("is not a Discord webhook URL (https://discord.com/api/webhooks/ID/TOKEN)")


def _level(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if value.upper() not in LEVELS:
        raise ValueError(f"must be one of {', '.join(LEVELS)}")


def _levels(_: Any, attribute: attrs.Attribute[list[str]], value: list[str]) -> None:
    bad = [lv for lv in value if lv.upper() not in LEVELS]
    if bad:
        raise ValueError(f"{bad!r}: not levels ({', '.join(LEVELS)})")


def _embeds(_: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if not 1 <= value <= 10:
        raise ValueError("must be between 1 and 10 (Discord's limit per message)")


def _per_minute(_: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if not 1 <= value <= 30:
        raise ValueError("must be between 1 and 30 (Discord allows 30 messages a minute)")


@attrs.frozen
class WebhookLogConfig:
    """Where and what to deliver; empty ``url`` keeps the sink off."""

    #: The channel webhook's URL; also ``WISP_WEBHOOKLOG__URL``.  A secret.
    url: str = attrs.field(default="", validator=_url, metadata={"secret": True}, repr=False)
    #: Records at this level and above are delivered.
    level: str = attrs.field(default="ERROR", validator=_level)
    #: Further levels delivered although below ``level`` (``["SUCCESS"]``).
    also: list[str] = attrs.field(factory=list, validator=_levels)
    #: Wait this long after a record for others to send them in one message.
    batch_seconds: float = attrs.field(default=2.0, validator=positive)
    #: Records per message (one embed each).
    max_embeds: int = attrs.field(default=10, validator=_embeds)
    #: Messages per minute (Discord: 30 per minute per channel, 5 per 2 seconds).
    per_minute: int = attrs.field(default=25, validator=_per_minute)
    #: Records waiting at most; beyond, new ones are dropped and counted.
    max_queue: int = attrs.field(default=200, validator=positive)
    #: The name the messages are posted under.
    username: str = "wisp logs"
    #: On stop, wait at most this long to deliver what is queued.
    flush_seconds: float = attrs.field(default=5.0, validator=positive)
