"""An offline fake of Discord for the real discord.py client.

:class:`FakeDiscord` is a small aiohttp server on ``127.0.0.1`` that speaks enough of
Discord's REST API (``/api/v10``) and gateway (a websocket) for an unmodified
``discord.Client`` / ``commands.Bot`` / ``AutoShardedClient`` to log in, receive
``READY`` and ``GUILD_CREATE``, get events injected by tests or a console, and
answer them.  Nothing talks to the real Discord and any token works (unless
``required_token`` is set).

Typical use::

    async with FakeDiscord() as fake:
        with patched_endpoints(fake):
            client = discord.Client(intents=..., guild_ready_timeout=0.2)
            async with client:  # wait_until_ready() needs the client set up first
                task = asyncio.create_task(client.start("any-token"))
                await client.wait_until_ready()
                await fake.message_create(content="hello")
                sent = await fake.wait_for_message()
                ...
                await client.close()
                await task

Close the client before the fake: a client that loses the fake tries to reconnect.
``guild_ready_timeout`` (discord.py's wait for more GUILD_CREATEs before READY,
default 2s) can be small because the fake sends them all at once.  A non-initial
IDENTIFY (every shard after the first, a re-identify after INVALID_SESSION) sleeps
5s in discord.py's default ``before_identify_hook``; override it in tests.

Every REST call is recorded in :attr:`FakeDiscord.calls` (see
:class:`RecordedCall`), every event sent over the gateway in
:attr:`FakeDiscord.events`.  :func:`patched_endpoints` points discord.py at the
fake (``discord.http.Route.BASE``, ``DiscordWebSocket.DEFAULT_GATEWAY`` and
``discord.asset.Asset.BASE`` are process-wide, so one fake per process at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import socket
import time
import urllib.parse
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from types import EllipsisType, TracebackType
from typing import Any, Final, Generic, Self, TypeVar

import aiohttp
import attrs
from aiohttp import web

from wisp.plugins.discord.fakelimits import FakeRestLimits, RestLimits

__all__ = [
    "ALL_PERMISSIONS",
    "DEFAULT_BOT_ID",
    "DEFAULT_CHANNEL_ID",
    "DEFAULT_EVERYONE_PERMISSIONS",
    "DEFAULT_GUILD_ID",
    "DEFAULT_OWNER_ID",
    "ChannelType",
    "DispatchedEvent",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeInteraction",
    "FakeMember",
    "FakeRole",
    "FakeUser",
    "FakeWebhook",
    "RecordedCall",
    "RecordedFile",
    "RestLimits",
    "guild_id_for_shard",
    "new_snowflake",
    "patched_endpoints",
    "snowflake_at",
]

_log = logging.getLogger(__name__)

JSON = dict[str, Any]
T = TypeVar("T")

# --------------------------------------------------------------------------- snowflakes

DISCORD_EPOCH_MS: Final = 1_420_070_400_000
_FIXTURE_TIME: Final = datetime(2024, 1, 1, tzinfo=UTC)


def snowflake_at(when: datetime, increment: int = 0) -> int:
    """A snowflake for the instant ``when``; ``increment`` (0-4095) tells several apart."""
    ms = int(when.timestamp() * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (increment & 0xFFF)


class _SnowflakeGenerator:
    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        if candidate <= self._last:
            candidate = self._last + 1
        self._last = candidate
        return candidate


_SNOWFLAKES = _SnowflakeGenerator()


def new_snowflake() -> int:
    """A fresh snowflake for "now", unique and increasing within this process."""
    return _SNOWFLAKES.next()


def guild_id_for_shard(shard_id: int, shard_count: int, increment: int = 0) -> int:
    """A fixture guild id that Discord's formula ``(id >> 22) % count`` puts on ``shard_id``."""
    if not 0 <= shard_id < shard_count:
        raise ValueError(f"shard_id {shard_id} is not in range({shard_count})")
    base = (snowflake_at(_FIXTURE_TIME) >> 22) + 1_000
    ms = base + (shard_id - base) % shard_count
    return (ms << 22) | (increment & 0xFFF)


DEFAULT_BOT_ID: Final = snowflake_at(_FIXTURE_TIME, 1)
DEFAULT_OWNER_ID: Final = snowflake_at(_FIXTURE_TIME, 2)
DEFAULT_GUILD_ID: Final = snowflake_at(_FIXTURE_TIME, 3)
DEFAULT_CHANNEL_ID: Final = DEFAULT_GUILD_ID + 1

# --------------------------------------------------------------------------- constants

#: Every permission bit discord.py 2.7 knows (``discord.Permissions.all().value``).
ALL_PERMISSIONS: Final = 8_866_461_766_385_663
_ADMINISTRATOR: Final = 1 << 3
#: What a new @everyone role gets: view, send, history, reactions, embeds, files,
#: external emojis, application commands, connect/speak, invites, nicknames.
DEFAULT_EVERYONE_PERMISSIONS: Final = (
    (1 << 0)
    | (1 << 6)
    | (1 << 10)
    | (1 << 11)
    | (1 << 14)
    | (1 << 15)
    | (1 << 16)
    | (1 << 18)
    | (1 << 20)
    | (1 << 21)
    | (1 << 26)
    | (1 << 31)
)

# Application flags: GATEWAY_PRESENCE, GATEWAY_GUILD_MEMBERS, GATEWAY_MESSAGE_CONTENT,
# APPLICATION_COMMAND_BADGE -- the fake app is allowed every privileged intent.
_APPLICATION_FLAGS: Final = (1 << 12) | (1 << 14) | (1 << 18) | (1 << 23)

_INTENT_GUILDS: Final = 1 << 0
_INTENT_GUILD_MEMBERS: Final = 1 << 1
_INTENT_GUILD_PRESENCES: Final = 1 << 8
_INTENT_GUILD_MESSAGES: Final = 1 << 9
_INTENT_GUILD_REACTIONS: Final = 1 << 10
_INTENT_GUILD_TYPING: Final = 1 << 11
_INTENT_DM_MESSAGES: Final = 1 << 12
_INTENT_DM_REACTIONS: Final = 1 << 13
_INTENT_DM_TYPING: Final = 1 << 14
_INTENT_MESSAGE_CONTENT: Final = 1 << 15

# event -> (intent needed in a guild, intent needed in a DM); None: always sent.
_EVENT_INTENTS: Final[dict[str, tuple[int, int | None]]] = {
    "GUILD_UPDATE": (_INTENT_GUILDS, None),
    "GUILD_ROLE_CREATE": (_INTENT_GUILDS, None),
    "GUILD_ROLE_UPDATE": (_INTENT_GUILDS, None),
    "GUILD_ROLE_DELETE": (_INTENT_GUILDS, None),
    "CHANNEL_CREATE": (_INTENT_GUILDS, None),
    "CHANNEL_UPDATE": (_INTENT_GUILDS, None),
    "CHANNEL_DELETE": (_INTENT_GUILDS, None),
    "GUILD_MEMBER_ADD": (_INTENT_GUILD_MEMBERS, None),
    "GUILD_MEMBER_UPDATE": (_INTENT_GUILD_MEMBERS, None),
    "GUILD_MEMBER_REMOVE": (_INTENT_GUILD_MEMBERS, None),
    "PRESENCE_UPDATE": (_INTENT_GUILD_PRESENCES, None),
    "MESSAGE_CREATE": (_INTENT_GUILD_MESSAGES, _INTENT_DM_MESSAGES),
    "MESSAGE_UPDATE": (_INTENT_GUILD_MESSAGES, _INTENT_DM_MESSAGES),
    "MESSAGE_DELETE": (_INTENT_GUILD_MESSAGES, _INTENT_DM_MESSAGES),
    "MESSAGE_DELETE_BULK": (_INTENT_GUILD_MESSAGES, None),
    "MESSAGE_REACTION_ADD": (_INTENT_GUILD_REACTIONS, _INTENT_DM_REACTIONS),
    "MESSAGE_REACTION_REMOVE": (_INTENT_GUILD_REACTIONS, _INTENT_DM_REACTIONS),
    "MESSAGE_REACTION_REMOVE_ALL": (_INTENT_GUILD_REACTIONS, _INTENT_DM_REACTIONS),
    "MESSAGE_REACTION_REMOVE_EMOJI": (_INTENT_GUILD_REACTIONS, _INTENT_DM_REACTIONS),
    "TYPING_START": (_INTENT_GUILD_TYPING, _INTENT_DM_TYPING),
}

_MESSAGE_FLAG_EPHEMERAL: Final = 1 << 6
_MESSAGE_FLAG_LOADING: Final = 1 << 7
_ATTACHMENT_SIZE_LIMIT: Final = 10 * 1024 * 1024
# 1x1 transparent PNG, served for any CDN asset the fake does not hold.
_PIXEL_PNG: Final = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


class ChannelType:
    """Discord channel type numbers used by the fixtures."""

    TEXT: Final = 0
    DM: Final = 1
    VOICE: Final = 2
    CATEGORY: Final = 4
    NEWS: Final = 5
    FORUM: Final = 15


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(when: datetime) -> str:
    return when.isoformat()


def _dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- fixtures


@attrs.define
class FakeUser:
    """A Discord user (or bot account)."""

    id: int
    username: str
    global_name: str | None = None
    bot: bool = False
    discriminator: str = "0"
    avatar: str | None = None

    def to_payload(self) -> JSON:
        return {
            "id": str(self.id),
            "username": self.username,
            "discriminator": self.discriminator,
            "global_name": self.global_name,
            "avatar": self.avatar,
            "bot": self.bot,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
        }


@attrs.define
class FakeRole:
    """A guild role.  The role whose id equals the guild's id is @everyone."""

    id: int
    name: str
    permissions: int = 0
    position: int = 0
    color: int = 0
    hoist: bool = False
    mentionable: bool = False
    managed: bool = False
    bot_id: int | None = None

    def to_payload(self) -> JSON:
        payload: JSON = {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": self.color,
            "colors": {
                "primary_color": self.color,
                "secondary_color": None,
                "tertiary_color": None,
            },
            "hoist": self.hoist,
            "mentionable": self.mentionable,
            "managed": self.managed,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }
        if self.bot_id is not None:
            payload["tags"] = {"bot_id": str(self.bot_id)}
        return payload


@attrs.define
class FakeChannel:
    """A guild channel (text by default; see :class:`ChannelType`)."""

    id: int
    name: str
    type: int = ChannelType.TEXT
    position: int = 0
    topic: str | None = None
    parent_id: int | None = None
    nsfw: bool = False
    permission_overwrites: list[JSON] = attrs.Factory(list)

    def to_payload(self, guild_id: int) -> JSON:
        payload: JSON = {
            "id": str(self.id),
            "guild_id": str(guild_id),
            "type": self.type,
            "name": self.name,
            "position": self.position,
            "parent_id": None if self.parent_id is None else str(self.parent_id),
            "nsfw": self.nsfw,
            "permission_overwrites": list(self.permission_overwrites),
            "flags": 0,
        }
        if self.type in (ChannelType.TEXT, ChannelType.NEWS, ChannelType.FORUM):
            payload.update(topic=self.topic, rate_limit_per_user=0, last_message_id=None)
        if self.type == ChannelType.VOICE:
            payload.update(bitrate=64000, user_limit=0, rtc_region=None)
        return payload


@attrs.define
class FakeMember:
    """A user's membership of a guild."""

    user: FakeUser
    roles: list[int] = attrs.Factory(list)
    nick: str | None = None
    joined_at: datetime = attrs.Factory(lambda: _FIXTURE_TIME)
    #: ISO 8601 end of a timeout (``PATCH .../members/ID``), or None.
    communication_disabled_until: str | None = None

    def to_payload(self, *, with_user: bool = True) -> JSON:
        payload: JSON = {
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "roles": [str(r) for r in self.roles],
            "joined_at": _iso(self.joined_at),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": self.communication_disabled_until,
        }
        if with_user:
            payload["user"] = self.user.to_payload()
        return payload


def _default_channels(guild: FakeGuild) -> list[FakeChannel]:
    return [FakeChannel(id=guild.id + 1, name="general")]


def _default_roles(guild: FakeGuild) -> list[FakeRole]:
    return [FakeRole(id=guild.id, name="@everyone", permissions=DEFAULT_EVERYONE_PERMISSIONS)]


def _default_members(guild: FakeGuild) -> list[FakeMember]:
    return [FakeMember(FakeUser(id=guild.owner_id, username="owner"))]


@attrs.define
class FakeGuild:
    """A guild as the fake serves it.

    The defaults give one #general text channel (id ``guild.id + 1``), an @everyone
    role and the owner as a member.  The bot's member is added when the guild is
    sent if it is not listed, and an @everyone role if none is.
    """

    id: int = DEFAULT_GUILD_ID
    name: str = "Wisp Test Guild"
    owner_id: int = DEFAULT_OWNER_ID
    channels: list[FakeChannel] = attrs.Factory(_default_channels, takes_self=True)
    roles: list[FakeRole] = attrs.Factory(_default_roles, takes_self=True)
    members: list[FakeMember] = attrs.Factory(_default_members, takes_self=True)
    preferred_locale: str = "en-US"
    features: list[str] = attrs.Factory(list)
    description: str | None = None
    system_channel_id: int | None = None
    #: Banned user ids and the ban's reason (``PUT``/``DELETE /guilds/ID/bans/USER``).
    bans: dict[int, str | None] = attrs.Factory(dict)

    def get_channel(self, channel_id: int) -> FakeChannel | None:
        return next((c for c in self.channels if c.id == channel_id), None)

    def get_role(self, role_id: int) -> FakeRole | None:
        return next((r for r in self.roles if r.id == role_id), None)

    def get_member(self, user_id: int) -> FakeMember | None:
        return next((m for m in self.members if m.user.id == user_id), None)

    def first_text_channel(self) -> FakeChannel:
        for channel in self.channels:
            if channel.type in (ChannelType.TEXT, ChannelType.NEWS):
                return channel
        raise LookupError(f"guild {self.id} has no text channel")

    def permissions_of(self, member: FakeMember) -> int:
        """Guild-level permissions (channel overwrites are not applied)."""
        if member.user.id == self.owner_id:
            return ALL_PERMISSIONS
        everyone = self.get_role(self.id)
        value = everyone.permissions if everyone is not None else DEFAULT_EVERYONE_PERMISSIONS
        for role_id in member.roles:
            role = self.get_role(role_id)
            if role is not None:
                value |= role.permissions
        return ALL_PERMISSIONS if value & _ADMINISTRATOR else value


# --------------------------------------------------------------------------- records


@attrs.frozen
class RecordedFile:
    """A file uploaded in a multipart request."""

    field: str
    filename: str | None
    content_type: str | None
    data: bytes


@attrs.frozen
class RecordedCall:
    """One REST request the client made, with the fake's answer.

    ``path`` is relative to the API base (``/channels/1/messages``), ``json`` the
    JSON body (or a multipart request's ``payload_json``), ``response`` the JSON
    the fake answered with.
    """

    method: str
    path: str
    query: Mapping[str, str]
    json: Any
    files: tuple[RecordedFile, ...]
    status: int
    response: Any
    reason: str | None = None


@attrs.frozen
class DispatchedEvent:
    """A DISPATCH the fake sent (or tried to send) over the gateway."""

    name: str
    data: JSON
    shard_ids: tuple[int, ...]


@attrs.define
class FakeWebhook:
    """A channel webhook (``FakeDiscord.create_webhook``): what a log sink posts to.

    Executions arrive in :attr:`FakeDiscord.calls` (``POST /webhooks/{id}/{token}``)
    and become messages in the channel, authored by the webhook.
    """

    id: int
    token: str
    channel_id: int
    name: str = "wisp-webhook"

    @property
    def url(self) -> str:
        """The URL Discord would show (discord.py's ``Webhook.from_url`` parses it)."""
        return f"https://discord.com/api/webhooks/{self.id}/{self.token}"

    def user(self) -> FakeUser:
        return FakeUser(id=self.id, username=self.name, bot=True)


@attrs.define
class FakeInteraction:
    """An interaction the fake created, and what the bot did with it."""

    id: int
    token: str
    type: int
    guild_id: int | None
    channel_id: int
    user: FakeUser
    payload: JSON
    created: float = attrs.Factory(time.monotonic)
    response_type: int | None = None
    response_data: JSON | None = None
    original_message_id: int | None = None
    followup_ids: list[int] = attrs.Factory(list)
    message_id: int | None = None

    @property
    def responded(self) -> bool:
        return self.response_type is not None

    @property
    def ephemeral(self) -> bool:
        data = self.response_data or {}
        return bool(int(data.get("flags") or 0) & _MESSAGE_FLAG_EPHEMERAL)


class _WaiterSet(Generic[T]):
    """Futures waiting for the first item that satisfies a predicate."""

    def __init__(self) -> None:
        self._waiters: list[tuple[Callable[[T], bool], asyncio.Future[T]]] = []

    def notify(self, item: T) -> None:
        for entry in list(self._waiters):
            predicate, future = entry
            if future.done():
                self._waiters.remove(entry)
                continue
            try:
                matched = predicate(item)
            except Exception as exc:  # a broken predicate fails its waiter
                future.set_exception(exc)
                self._waiters.remove(entry)
                continue
            if matched:
                future.set_result(item)
                self._waiters.remove(entry)

    async def wait(self, predicate: Callable[[T], bool], timeout: float) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)


# --------------------------------------------------------------------------- gateway


class _Connection:
    """One gateway websocket; serialises sends (zlib-stream is a single stream)."""

    def __init__(self, ws: web.WebSocketResponse, *, zlib_stream: bool) -> None:
        self.ws = ws
        self.lock = asyncio.Lock()
        self.session: _Session | None = None
        self._deflate = zlib.compressobj() if zlib_stream else None

    async def send(self, payload: JSON) -> bool:
        text = _dumps(payload)
        async with self.lock:
            if self.ws.closed:
                return False
            try:
                if self._deflate is None:
                    await self.ws.send_str(text)
                else:
                    data = self._deflate.compress(text.encode()) + self._deflate.flush(
                        zlib.Z_SYNC_FLUSH
                    )
                    await self.ws.send_bytes(data)
            except (ConnectionError, RuntimeError):
                return False
        return True


class _Session:
    """A gateway session: survives its websocket so it can be RESUMEd."""

    def __init__(self, shard: tuple[int, int] | None, intents: int | None) -> None:
        self.id = secrets.token_hex(16)
        self.shard = shard
        self.intents = intents
        self.seq = 0
        self.lock = asyncio.Lock()
        self.conn: _Connection | None = None
        self.buffer: deque[JSON] = deque(maxlen=1000)
        self.presence: Any = None

    @property
    def shard_id(self) -> int:
        return 0 if self.shard is None else self.shard[0]

    def has_guild(self, guild_id: int) -> bool:
        if self.shard is None:
            return True
        shard_id, count = self.shard
        return (guild_id >> 22) % count == shard_id

    def wants(self, bit: int | None) -> bool:
        return bit is None or self.intents is None or bool(self.intents & bit)

    async def dispatch(self, event: str, data: JSON) -> None:
        async with self.lock:
            await self._send_locked(event, data)

    async def _send_locked(self, event: str, data: JSON) -> None:
        self.seq += 1
        payload = {"op": 0, "t": event, "s": self.seq, "d": data}
        self.buffer.append(payload)
        if self.conn is not None and not await self.conn.send(payload):
            self.conn = None


# --------------------------------------------------------------------------- REST plumbing


@attrs.define
class _ApiRequest:
    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: tuple[RecordedFile, ...]
    reason: str | None


@attrs.frozen
class _Reply:
    status: int = 200
    body: Any = attrs.Factory(dict)


def _error(status: int, code: int, message: str) -> _Reply:
    return _Reply(status, {"code": code, "message": message})


def _unknown(what: str, code: int) -> _Reply:
    return _error(404, code, f"Unknown {what}")


_Handler = Callable[[_ApiRequest, dict[str, str]], Awaitable[_Reply]]

_MENTION_USER = re.compile(r"<@!?(\d+)>")
_MENTION_ROLE = re.compile(r"<@&(\d+)>")
_COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")


def _parse_emoji(text: str) -> JSON:
    """``"👍"``, ``"name:id"``, ``"a:name:id"`` or ``"<:name:id>"`` to an emoji object."""
    text = text.strip("<>")
    parts = text.split(":")
    if len(parts) >= 2 and parts[-1].isdigit():
        animated = len(parts) == 3 and parts[0] == "a"
        return {"id": parts[-1], "name": parts[-2], "animated": animated}
    return {"id": None, "name": text}


def _emoji_key(emoji: JSON) -> str:
    return str(emoji["id"]) if emoji.get("id") else str(emoji["name"])


# --------------------------------------------------------------------------- the fake


class FakeDiscord:
    """An offline Discord: REST API, gateway, fixtures and an injection API.

    :param guilds: the guilds the bot is in (default: one :class:`FakeGuild`).
    :param bot: the bot's user (default id :data:`DEFAULT_BOT_ID`).
    :param application_id: defaults to the bot's id, like a real bot application.
    :param app_owner: the application's owner (``Bot.is_owner``); default the first
        guild's owner.
    :param recommended_shards: the ``shards`` GET /gateway/bot answers.
    :param heartbeat_interval: milliseconds, sent in HELLO.
    :param required_token: if set, REST calls with another token get 401 and an
        IDENTIFY with another token is closed with 4004 (like a bad token).
    :param enforce_intents: drop events the IDENTIFY's intents do not ask for, and
        blank guild message content without the message-content intent (unless the
        bot is mentioned or wrote it), as Discord does.
    :param echo: send MESSAGE_CREATE/UPDATE/DELETE (and reaction events) for what the
        bot does over REST, as Discord does.
    :param zlib_stream: honour ``compress=zlib-stream`` in the gateway URL; otherwise
        (and for ``zstd-stream``) plain text frames are sent, which discord.py accepts.
    :param interaction_deadline: seconds after which an unanswered interaction's
        callback gets 404 Unknown interaction (Discord: 3); None: no deadline.
    :param rest_limits: enforce Discord's per-route and global REST limits and
        count invalid requests (:mod:`~wisp.plugins.discord.fakelimits`); None: off.
    :param max_concurrency: ``session_start_limit.max_concurrency`` in GET /gateway/bot:
        IDENTIFY buckets are ``shard_id % max_concurrency``.
    :param enforce_identify_buckets: answer a second IDENTIFY in one bucket within
        ``identify_window`` seconds with op 9 Invalid Session, as Discord does
        (recorded in :attr:`identify_rejections`).
    :param session_start_limit: the day's session starts (``total``); ``remaining``
        starts at ``session_start_remaining`` (default ``total - 1``), every accepted
        IDENTIFY takes one, and at 0 an IDENTIFY gets op 9.
    """

    def __init__(
        self,
        guilds: Sequence[FakeGuild] | None = None,
        *,
        bot: FakeUser | None = None,
        application_id: int | None = None,
        app_owner: FakeUser | None = None,
        recommended_shards: int = 1,
        heartbeat_interval: int = 41_250,
        required_token: str | None = None,
        enforce_intents: bool = True,
        echo: bool = True,
        zlib_stream: bool = True,
        interaction_deadline: float | None = None,
        rest_limits: RestLimits | None = None,
        max_concurrency: int = 1,
        enforce_identify_buckets: bool = False,
        identify_window: float = 5.0,
        session_start_limit: int = 1000,
        session_start_remaining: int | None = None,
    ) -> None:
        self.bot = bot or FakeUser(id=DEFAULT_BOT_ID, username="wisp-bot", bot=True)
        self.application_id = application_id or self.bot.id
        self.guilds: dict[int, FakeGuild] = {
            g.id: g for g in (guilds if guilds is not None else [FakeGuild()])
        }
        self.app_owner = app_owner or self._default_owner()
        self.recommended_shards = recommended_shards
        self.heartbeat_interval = heartbeat_interval
        self.required_token = required_token
        self.enforce_intents = enforce_intents
        self.echo = echo
        self.zlib_stream = zlib_stream
        self.interaction_deadline = interaction_deadline
        #: REST limits, 429s by scope, invalid requests, forced failures (``fail_next``).
        self.rest = FakeRestLimits(rest_limits)
        self.max_concurrency = max_concurrency
        self.enforce_identify_buckets = enforce_identify_buckets
        self.identify_window = identify_window
        self.session_start_limit = session_start_limit
        self.session_start_remaining = (
            session_start_limit - 1 if session_start_remaining is None else session_start_remaining
        )
        #: IDENTIFYs answered with op 9 (bucket busy, budget spent): ``(shard_id, why)``.
        self.identify_rejections: list[tuple[int, str]] = []
        #: Accepted IDENTIFYs: ``(shard_id, loop time)``.
        self.identifies: list[tuple[int, float]] = []
        self._bucket_last: dict[int, float] = {}

        self.calls: list[RecordedCall] = []
        self.events: list[DispatchedEvent] = []
        #: Gateway payloads received from clients (tokens blanked).
        self.received: list[JSON] = []
        #: Exceptions raised while handling gateway traffic (should stay empty).
        self.errors: list[BaseException] = []
        #: The query string of every gateway connection (``v``, ``encoding``, ``compress``).
        self.gateway_connections: list[dict[str, str]] = []
        self.messages: dict[int, JSON] = {}
        self.interactions: dict[int, FakeInteraction] = {}
        self.global_commands: list[JSON] = []
        self.guild_commands: dict[int, list[JSON]] = {}
        self.listeners: list[Callable[[RecordedCall], None]] = []

        self._reactions: dict[int, dict[str, tuple[JSON, list[int]]]] = {}
        self._joined_at = _FIXTURE_TIME
        self._interaction_tokens: dict[str, FakeInteraction] = {}
        #: Channel webhooks by id (:meth:`create_webhook`).
        self.webhooks: dict[int, FakeWebhook] = {}
        self._dm_channels: dict[int, int] = {}  # channel id -> user id
        self._cdn_files: dict[str, tuple[bytes, str]] = {}
        self._sessions: dict[str, _Session] = {}
        self._connections: set[_Connection] = set()
        self._call_waiters: _WaiterSet[RecordedCall] = _WaiterSet()
        self._session_waiters: _WaiterSet[_Session] = _WaiterSet()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._routes: list[tuple[str, re.Pattern[str], _Handler]] = self._build_routes()

    def _default_owner(self) -> FakeUser:
        for guild in self.guilds.values():
            member = guild.get_member(guild.owner_id)
            if member is not None:
                return member.user
        return FakeUser(id=DEFAULT_OWNER_ID, username="owner")

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port and serve."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", r"/api/v{version:\d+}/{tail:.*}", self._api)
        app.router.add_route("*", "/api/{tail:.*}", self._api)
        app.router.add_get("/cdn/{tail:.*}", self._cdn)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            self._port = int(sock.getsockname()[1])
            site = web.SockSite(runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        """Close every gateway connection (code 1001) and the server."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for conn in list(self._connections):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await conn.ws.close(code=1001, message=b"fake discord stopping")
        self._sessions.clear()
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None or self._runner is None:
            raise RuntimeError("FakeDiscord is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """What ``discord.http.Route.BASE`` should be."""
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """The gateway's ws:// URL (without query), as GET /gateway/bot answers."""
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def cdn_base(self) -> str:
        """What ``discord.asset.Asset.BASE`` should be."""
        return f"{self.url}/cdn"

    # ------------------------------------------------------------------ lookups

    @property
    def default_guild(self) -> FakeGuild:
        try:
            return next(iter(self.guilds.values()))
        except StopIteration:
            raise LookupError("the fake has no guilds") from None

    def get_guild(self, guild_id: int | None = None) -> FakeGuild:
        if guild_id is None:
            return self.default_guild
        try:
            return self.guilds[guild_id]
        except KeyError:
            raise LookupError(f"no fake guild {guild_id}") from None

    def _find_user(self, user_id: int) -> FakeUser | None:
        if user_id == self.bot.id:
            return self.bot
        if user_id == self.app_owner.id:
            return self.app_owner
        for guild in self.guilds.values():
            member = guild.get_member(user_id)
            if member is not None:
                return member.user
        return None

    def _guild_of_channel(self, channel_id: int) -> FakeGuild | None:
        for guild in self.guilds.values():
            if guild.get_channel(channel_id) is not None:
                return guild
        return None

    def _bot_member(self, guild: FakeGuild) -> FakeMember:
        member = guild.get_member(self.bot.id)
        if member is None:
            member = FakeMember(self.bot, joined_at=self._joined_at)
            guild.members.append(member)
        return member

    def _resolve_user(
        self, user: FakeUser | FakeMember | int | None, guild: FakeGuild | None
    ) -> FakeUser:
        if isinstance(user, FakeMember):
            return user.user
        if isinstance(user, FakeUser):
            return user
        if user is None:
            if guild is not None:
                member = guild.get_member(guild.owner_id)
                if member is not None:
                    return member.user
            return self.app_owner
        found = self._find_user(user)
        if found is None:
            raise LookupError(f"no fake user {user}")
        return found

    def dm_channel_id(self, user_id: int) -> int:
        """The id of the DM channel between the bot and ``user_id`` (created on demand)."""
        for channel_id, uid in self._dm_channels.items():
            if uid == user_id:
                return channel_id
        channel_id = new_snowflake()
        self._dm_channels[channel_id] = user_id
        return channel_id

    # ------------------------------------------------------------------ payloads

    def _me_payload(self) -> JSON:
        payload = self.bot.to_payload()
        payload.update(verified=True, mfa_enabled=False, email=None, locale="en-US")
        return payload

    def _roles_payload(self, guild: FakeGuild) -> list[JSON]:
        roles = [r.to_payload() for r in guild.roles]
        if guild.get_role(guild.id) is None:
            everyone = FakeRole(guild.id, "@everyone", permissions=DEFAULT_EVERYONE_PERMISSIONS)
            roles.insert(0, everyone.to_payload())
        return roles

    def guild_payload(self, guild: FakeGuild, *, full: bool = True) -> JSON:
        """The guild object; ``full`` adds what GUILD_CREATE carries (channels, members...)."""
        self._bot_member(guild)
        payload: JSON = {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "owner_id": str(guild.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": self._roles_payload(guild),
            "emojis": [],
            "stickers": [],
            "features": list(guild.features),
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None
            if guild.system_channel_id is None
            else str(guild.system_channel_id),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "description": guild.description,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": guild.preferred_locale,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "max_members": 500_000,
            "max_video_channel_users": 25,
        }
        if full:
            payload.update(
                joined_at=_iso(self._joined_at),
                large=len(guild.members) >= 250,
                unavailable=False,
                member_count=len(guild.members),
                voice_states=[],
                members=[m.to_payload() for m in guild.members],
                channels=[c.to_payload(guild.id) for c in guild.channels],
                threads=[],
                presences=[],
                stage_instances=[],
                guild_scheduled_events=[],
                soundboard_sounds=[],
            )
        return payload

    def _channel_payload(self, channel_id: int) -> JSON | None:
        guild = self._guild_of_channel(channel_id)
        if guild is not None:
            channel = guild.get_channel(channel_id)
            assert channel is not None
            return channel.to_payload(guild.id)
        user_id = self._dm_channels.get(channel_id)
        if user_id is not None:
            user = self._find_user(user_id) or FakeUser(user_id, f"user{user_id}")
            return {
                "id": str(channel_id),
                "type": ChannelType.DM,
                "last_message_id": None,
                "recipients": [user.to_payload()],
                "flags": 0,
            }
        return None

    def _member_payload(
        self, guild: FakeGuild, member: FakeMember, *, with_user: bool = True
    ) -> JSON:
        payload = member.to_payload(with_user=with_user)
        payload["permissions"] = str(guild.permissions_of(member))
        return payload

    def _mentions(self, content: str, guild: FakeGuild | None) -> tuple[list[JSON], list[str]]:
        users: list[JSON] = []
        for raw in dict.fromkeys(_MENTION_USER.findall(content)):
            user = self._find_user(int(raw))
            if user is None:
                continue
            entry = user.to_payload()
            member = guild.get_member(user.id) if guild is not None else None
            if member is not None:
                entry["member"] = member.to_payload(with_user=False)
            users.append(entry)
        roles = list(dict.fromkeys(_MENTION_ROLE.findall(content)))
        return users, roles

    def _attachments(
        self, channel_id: int, body: JSON, files: Sequence[RecordedFile]
    ) -> list[JSON]:
        described = {
            str(a.get("id")): a for a in body.get("attachments") or [] if isinstance(a, dict)
        }
        result: list[JSON] = []
        for index, file in enumerate(files):
            attachment_id = new_snowflake()
            filename = file.filename or f"file{index}"
            path = f"attachments/{channel_id}/{attachment_id}/{filename}"
            content_type = file.content_type or "application/octet-stream"
            self._cdn_files[path] = (file.data, content_type)
            url = f"{self.cdn_base}/{path}"
            entry: JSON = {
                "id": str(attachment_id),
                "filename": filename,
                "size": len(file.data),
                "url": url,
                "proxy_url": url,
                "content_type": content_type,
            }
            description = described.get(str(index), {}).get("description")
            if description:
                entry["description"] = description
            result.append(entry)
        # Attachments kept on an edit are listed by id only.
        for attachment in body.get("attachments") or []:
            if isinstance(attachment, dict) and "url" in attachment:
                result.append(attachment)
        return result

    def _new_message(
        self,
        *,
        channel_id: int,
        author: FakeUser,
        body: JSON,
        files: Sequence[RecordedFile] = (),
        flags: int = 0,
        webhook: bool = False,
        interaction: FakeInteraction | None = None,
    ) -> JSON:
        guild = self._guild_of_channel(channel_id)
        content = str(body.get("content") or "")
        mentions, mention_roles = self._mentions(content, guild)
        message_id = new_snowflake()
        message: JSON = {
            "id": str(message_id),
            "channel_id": str(channel_id),
            "author": author.to_payload(),
            "content": content,
            "timestamp": _iso(_now()),
            "edited_timestamp": None,
            "tts": bool(body.get("tts", False)),
            "mention_everyone": "@everyone" in content or "@here" in content,
            "mentions": mentions,
            "mention_roles": mention_roles,
            "attachments": self._attachments(channel_id, body, files),
            "embeds": list(body.get("embeds") or []),
            "reactions": [],
            "pinned": False,
            "type": 0,
            "flags": int(body.get("flags") or 0) | flags,
            "components": list(body.get("components") or []),
            "sticker_items": [],
        }
        if guild is not None:
            message["guild_id"] = str(guild.id)
        if body.get("nonce") is not None:
            message["nonce"] = body["nonce"]
        if body.get("poll"):
            message["poll"] = body["poll"]
        reference = body.get("message_reference")
        if isinstance(reference, dict) and reference.get("message_id"):
            ref_id = int(reference["message_id"])
            message["type"] = 19
            message["message_reference"] = {
                "type": 0,
                "message_id": str(ref_id),
                "channel_id": str(reference.get("channel_id") or channel_id),
                **({"guild_id": str(guild.id)} if guild is not None else {}),
            }
            referenced = self.messages.get(ref_id)
            if referenced is not None:
                message["referenced_message"] = referenced
        if webhook:
            message["webhook_id"] = str(self.application_id)
            message["application_id"] = str(self.application_id)
        if interaction is not None:
            if interaction.original_message_id is None and interaction.type == 2:
                command_type = interaction.payload.get("data", {}).get("type", 1)
                message["type"] = 20 if command_type == 1 else 23
            owners = interaction.payload.get("authorizing_integration_owners", {})
            metadata: JSON = {
                "id": str(interaction.id),
                "type": interaction.type,
                "user": interaction.user.to_payload(),
                "authorizing_integration_owners": owners,
            }
            if interaction.original_message_id is not None:
                metadata["original_response_message_id"] = str(interaction.original_message_id)
            message["interaction_metadata"] = metadata
        self.messages[message_id] = message
        return message

    def _gateway_message(self, message: JSON) -> JSON:
        """A stored message as MESSAGE_CREATE/UPDATE carries it (with the author's member)."""
        data = dict(message)
        if "guild_id" in data and "webhook_id" not in data:
            guild = self.guilds.get(int(data["guild_id"]))
            member = guild.get_member(int(data["author"]["id"])) if guild is not None else None
            if member is not None:
                data["member"] = member.to_payload(with_user=False)
        return data

    async def _echo(self, event: str, message: JSON) -> None:
        if not self.echo or int(message.get("flags") or 0) & _MESSAGE_FLAG_EPHEMERAL:
            return
        if event == "MESSAGE_DELETE":
            data: JSON = {"id": message["id"], "channel_id": message["channel_id"]}
            if "guild_id" in message:
                data["guild_id"] = message["guild_id"]
            await self.dispatch(event, data)
        else:
            await self.dispatch(event, self._gateway_message(message))

    def _apply_edit(self, message: JSON, body: JSON, files: Sequence[RecordedFile]) -> None:
        channel_id = int(message["channel_id"])
        for key in ("content", "embeds", "components", "flags", "poll"):
            if key in body:
                value = body[key]
                message[key] = value if value is not None else ("" if key == "content" else None)
        if "content" in body:
            guild = self._guild_of_channel(channel_id)
            mentions, roles = self._mentions(str(message["content"] or ""), guild)
            message.update(mentions=mentions, mention_roles=roles)
        if "attachments" in body or files:
            message["attachments"] = self._attachments(channel_id, body, files)
        message["flags"] = int(message.get("flags") or 0) & ~_MESSAGE_FLAG_LOADING
        message["edited_timestamp"] = _iso(_now())

    # ------------------------------------------------------------------ recording

    def add_listener(self, callback: Callable[[RecordedCall], None]) -> None:
        """Call ``callback`` with every REST call as it is recorded (for a console)."""
        self.listeners.append(callback)

    def mark(self) -> int:
        """The current number of recorded calls, for ``since=`` arguments."""
        return len(self.calls)

    def _record(self, call: RecordedCall) -> None:
        self.calls.append(call)
        for listener in list(self.listeners):
            try:
                listener(call)
            except Exception:
                _log.exception("FakeDiscord listener failed")
        self._call_waiters.notify(call)

    async def wait_for_call(
        self,
        predicate: Callable[[RecordedCall], bool] | None = None,
        *,
        method: str | None = None,
        path: str | None = None,
        since: int = 0,
        timeout: float = 5.0,
    ) -> RecordedCall:
        """The first call from index ``since`` on that matches, waiting up to ``timeout``.

        ``path`` is a regular expression matched against the whole path.
        """

        def matches(call: RecordedCall) -> bool:
            if method is not None and call.method != method.upper():
                return False
            if path is not None and re.fullmatch(path, call.path) is None:
                return False
            return predicate is None or predicate(call)

        for call in self.calls[since:]:
            if matches(call):
                return call
        try:
            return await self._call_waiters.wait(matches, timeout)
        except TimeoutError:
            recent = ", ".join(f"{c.method} {c.path}" for c in self.calls[-10:])
            raise TimeoutError(
                f"no matching REST call within {timeout}s (method={method!r}, path={path!r}); "
                f"last calls: {recent or 'none'}"
            ) from None

    def calls_to(self, method: str, path: str) -> list[RecordedCall]:
        """Recorded calls with this method whose path fully matches the regex ``path``."""
        return [c for c in self.calls if c.method == method.upper() and re.fullmatch(path, c.path)]

    def messages_sent(self, channel_id: int | None = None) -> list[JSON]:
        """Messages the bot created (REST sends, interaction responses, followups)
        that still exist, oldest first; only in ``channel_id`` if given."""
        return [
            m
            for m in self.messages.values()
            if m["author"]["id"] == str(self.bot.id)
            and (channel_id is None or m["channel_id"] == str(channel_id))
        ]

    def interaction_responses(self, interaction_id: int) -> list[RecordedCall]:
        """The callback and webhook calls the bot made for an interaction, in order."""
        interaction = self.interactions[interaction_id]
        needle = f"/{interaction.token}"
        return [c for c in self.calls if needle in c.path]

    async def wait_for_interaction_response(
        self, interaction_id: int, *, timeout: float = 5.0
    ) -> RecordedCall:
        """The bot's POST /interactions/{id}/{token}/callback for this interaction."""
        return await self.wait_for_call(
            method="POST", path=rf"/interactions/{interaction_id}/[^/]+/callback", timeout=timeout
        )

    async def wait_for_message(
        self, channel_id: int | None = None, *, since: int = 0, timeout: float = 5.0
    ) -> JSON:
        """The message the bot sends with POST /channels/{id}/messages (from ``since`` on)."""
        channel = r"\d+" if channel_id is None else str(channel_id)
        pattern = rf"/channels/{channel}/messages"
        call = await self.wait_for_call(
            lambda c: c.status == 200, method="POST", path=pattern, since=since, timeout=timeout
        )
        result: JSON = call.response
        return result

    @property
    def shards_connected(self) -> list[int]:
        """Shard ids with a live, identified gateway connection."""
        return sorted(s.shard_id for s in self._sessions.values() if s.conn is not None)

    async def wait_for_identify(self, shard_id: int | None = None, *, timeout: float = 5.0) -> None:
        """Until a session (for ``shard_id``, if given) has identified or resumed
        and been sent its READY and GUILD_CREATEs."""

        def matches(session: _Session) -> bool:
            return session.conn is not None and (shard_id is None or session.shard_id == shard_id)

        if any(matches(s) for s in self._sessions.values()):
            return
        await self._session_waiters.wait(matches, timeout)

    # ------------------------------------------------------------------ gateway: injection

    @staticmethod
    def _guild_id_of(event: str, data: JSON) -> int | None:
        if event in ("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE"):
            return int(data["id"])
        raw = data.get("guild_id")
        return None if raw is None else int(raw)

    def _filter(
        self, session: _Session, event: str, data: JSON, guild_id: int | None
    ) -> JSON | None:
        if not self.enforce_intents or session.intents is None:
            return data
        needs = _EVENT_INTENTS.get(event)
        if needs is not None:
            bit = needs[0] if guild_id is not None else needs[1]
            own_member = event == "GUILD_MEMBER_UPDATE" and str(
                data.get("user", {}).get("id")
            ) == str(self.bot.id)
            if not session.wants(bit) and not own_member:
                return None
        if (
            event in ("MESSAGE_CREATE", "MESSAGE_UPDATE")
            and guild_id is not None
            and not session.wants(_INTENT_MESSAGE_CONTENT)
        ):
            author = str(data.get("author", {}).get("id"))
            mentioned = any(str(u.get("id")) == str(self.bot.id) for u in data.get("mentions", []))
            if author != str(self.bot.id) and not mentioned:
                data = dict(data)
                data.update(content="", embeds=[], attachments=[], components=[])
                data.pop("poll", None)
        return data

    async def dispatch(
        self, event: str, data: JSON, *, shard_id: int | None = None, guild_id: int | None = None
    ) -> int:
        """Send a DISPATCH ``event`` to every session that should get it.

        The target is the shard of ``guild_id`` (default: taken from the payload;
        DMs and guild-less events go to shard 0) or exactly ``shard_id``.  Sessions
        that are disconnected but resumable buffer it.  Returns how many sessions
        got the event (after intent filtering).
        """
        if guild_id is None:
            guild_id = self._guild_id_of(event, data)
        delivered: list[int] = []
        for session in list(self._sessions.values()):
            if shard_id is not None:
                if session.shard_id != shard_id:
                    continue
            elif guild_id is not None:
                if not session.has_guild(guild_id):
                    continue
            elif session.shard_id != 0:
                continue
            filtered = self._filter(session, event, data, guild_id)
            if filtered is None:
                continue
            await session.dispatch(event, filtered)
            delivered.append(session.shard_id)
        self.events.append(DispatchedEvent(event, data, tuple(delivered)))
        return len(delivered)

    async def message_create(
        self,
        guild_id: int | None = None,
        channel_id: int | None = None,
        author: FakeUser | FakeMember | int | None = None,
        content: str = "",
        *,
        dm: bool = False,
        embeds: Sequence[JSON] = (),
        reply_to: int | None = None,
    ) -> int:
        """A user posts a message; returns its id.

        Defaults: the first guild, its first text channel, the guild owner.  With
        ``dm=True`` the message is a DM from ``author`` to the bot.
        """
        guild = None if dm else self.get_guild(guild_id)
        user = self._resolve_user(author, guild)
        if guild is None:
            channel_id = self.dm_channel_id(user.id)
        elif channel_id is None:
            channel_id = guild.first_text_channel().id
        elif guild.get_channel(channel_id) is None:
            raise LookupError(f"guild {guild.id} has no channel {channel_id}")
        body: JSON = {"content": content, "embeds": list(embeds)}
        if reply_to is not None:
            body["message_reference"] = {"message_id": reply_to, "channel_id": channel_id}
        message = self._new_message(channel_id=channel_id, author=user, body=body)
        await self.dispatch("MESSAGE_CREATE", self._gateway_message(message))
        return int(message["id"])

    async def message_edit(
        self, message_id: int, content: str | None = None, **fields: Any
    ) -> None:
        """A message's author edits it (MESSAGE_UPDATE with the whole message)."""
        message = self._message(message_id)
        body: JSON = dict(fields)
        if content is not None:
            body["content"] = content
        self._apply_edit(message, body, ())
        await self.dispatch("MESSAGE_UPDATE", self._gateway_message(message))

    async def message_delete(self, message_id: int) -> None:
        message = self.messages.pop(message_id, None) or self._message(message_id)
        data: JSON = {"id": message["id"], "channel_id": message["channel_id"]}
        if "guild_id" in message:
            data["guild_id"] = message["guild_id"]
        await self.dispatch("MESSAGE_DELETE", data)

    def _message(self, message_id: int) -> JSON:
        try:
            return self.messages[message_id]
        except KeyError:
            raise LookupError(f"no fake message {message_id}") from None

    def _reaction_event(self, message: JSON, emoji: JSON, user_id: int, *, add: bool) -> JSON:
        data: JSON = {
            "user_id": str(user_id),
            "channel_id": message["channel_id"],
            "message_id": message["id"],
            "emoji": emoji,
            "burst": False,
            "type": 0,
        }
        if "guild_id" in message:
            data["guild_id"] = message["guild_id"]
            guild = self.guilds.get(int(message["guild_id"]))
            member = guild.get_member(user_id) if guild is not None else None
            if add and member is not None:
                data["member"] = member.to_payload()
        if add:
            data["message_author_id"] = message["author"]["id"]
            data["burst_colors"] = []
        return data

    def _set_reaction(self, message: JSON, emoji: JSON, user_id: int, *, add: bool) -> bool:
        message_id = int(message["id"])
        per_message = self._reactions.setdefault(message_id, {})
        key = _emoji_key(emoji)
        stored_emoji, users = per_message.get(key, (emoji, []))
        if add == (user_id in users):
            return False
        if add:
            users.append(user_id)
        else:
            users.remove(user_id)
        if users:
            per_message[key] = (stored_emoji, users)
        else:
            per_message.pop(key, None)
        self._refresh_reactions(message)
        return True

    def _refresh_reactions(self, message: JSON) -> None:
        per_message = self._reactions.get(int(message["id"]), {})
        message["reactions"] = [
            {
                "emoji": emoji,
                "count": len(users),
                "count_details": {"burst": 0, "normal": len(users)},
                "me": self.bot.id in users,
                "me_burst": False,
                "burst_colors": [],
            }
            for emoji, users in per_message.values()
        ]

    async def reaction_add(
        self, message_id: int, emoji: str, user: FakeUser | FakeMember | int | None = None
    ) -> None:
        """``user`` (default: the guild owner) reacts with ``emoji`` ("👍", "name:id")."""
        message = self._message(message_id)
        guild = self.guilds.get(int(message["guild_id"])) if "guild_id" in message else None
        who = self._resolve_user(user, guild)
        parsed = _parse_emoji(emoji)
        self._set_reaction(message, parsed, who.id, add=True)
        await self.dispatch(
            "MESSAGE_REACTION_ADD", self._reaction_event(message, parsed, who.id, add=True)
        )

    async def reaction_remove(
        self, message_id: int, emoji: str, user: FakeUser | FakeMember | int | None = None
    ) -> None:
        message = self._message(message_id)
        guild = self.guilds.get(int(message["guild_id"])) if "guild_id" in message else None
        who = self._resolve_user(user, guild)
        parsed = _parse_emoji(emoji)
        self._set_reaction(message, parsed, who.id, add=False)
        await self.dispatch(
            "MESSAGE_REACTION_REMOVE", self._reaction_event(message, parsed, who.id, add=False)
        )

    async def member_join(
        self, user: FakeUser, guild_id: int | None = None, *, roles: Sequence[int] = ()
    ) -> FakeMember:
        guild = self.get_guild(guild_id)
        if guild.get_member(user.id) is not None:
            raise ValueError(f"user {user.id} is already in guild {guild.id}")
        member = FakeMember(user, roles=list(roles), joined_at=_now())
        guild.members.append(member)
        await self.dispatch("GUILD_MEMBER_ADD", {**member.to_payload(), "guild_id": str(guild.id)})
        return member

    async def member_remove(self, user_id: int, guild_id: int | None = None) -> None:
        guild = self.get_guild(guild_id)
        member = guild.get_member(user_id)
        if member is None:
            raise LookupError(f"user {user_id} is not in guild {guild.id}")
        guild.members.remove(member)
        await self.dispatch(
            "GUILD_MEMBER_REMOVE", {"guild_id": str(guild.id), "user": member.user.to_payload()}
        )

    async def member_update(
        self,
        user_id: int,
        guild_id: int | None = None,
        *,
        nick: str | EllipsisType | None = ...,
        roles: Sequence[int] | None = None,
    ) -> FakeMember:
        """Change a member's nick (``None`` clears it) and/or roles."""
        guild = self.get_guild(guild_id)
        member = guild.get_member(user_id)
        if member is None:
            raise LookupError(f"user {user_id} is not in guild {guild.id}")
        if nick is not ...:
            member.nick = nick if isinstance(nick, str) else None
        if roles is not None:
            member.roles = list(roles)
        await self.dispatch(
            "GUILD_MEMBER_UPDATE", {**member.to_payload(), "guild_id": str(guild.id)}
        )
        return member

    async def guild_join(self, guild: FakeGuild) -> None:
        """The bot is added to ``guild`` (GUILD_CREATE -> ``on_guild_join``)."""
        self.guilds[guild.id] = guild
        payload = self.guild_payload(guild)
        payload.pop("unavailable")
        payload["joined_at"] = _iso(_now())
        await self.dispatch("GUILD_CREATE", payload)

    async def guild_remove(self, guild_id: int) -> None:
        """The bot leaves or is kicked (GUILD_DELETE -> ``on_guild_remove``)."""
        self.guilds.pop(guild_id, None)
        await self.dispatch("GUILD_DELETE", {"id": str(guild_id)})

    async def guild_update(self, guild_id: int | None = None, **changes: Any) -> None:
        """Change fields of the :class:`FakeGuild` (``name=...``) and send GUILD_UPDATE."""
        guild = self.get_guild(guild_id)
        for key, value in changes.items():
            setattr(guild, key, value)
        await self.dispatch("GUILD_UPDATE", self.guild_payload(guild, full=False))

    # ------------------------------------------------------------------ interactions

    def _find_command(
        self, name: str, guild_id: int | None, command_type: int
    ) -> tuple[JSON | None, bool]:
        """The synced command and whether it is guild-scoped."""
        if guild_id is not None:
            for command in self.guild_commands.get(guild_id, []):
                if command["name"] == name and command.get("type", 1) == command_type:
                    return command, True
        for command in self.global_commands:
            if command["name"] == name and command.get("type", 1) == command_type:
                return command, False
        return None, False

    def _resolve_value(
        self,
        value: Any,
        declared: int | None,
        guild: FakeGuild | None,
        resolved: dict[str, dict[str, JSON]],
    ) -> tuple[int, Any]:
        def add_user(user: FakeUser) -> None:
            resolved.setdefault("users", {})[str(user.id)] = user.to_payload()
            member = guild.get_member(user.id) if guild is not None else None
            if member is not None and guild is not None:
                resolved.setdefault("members", {})[str(user.id)] = self._member_payload(
                    guild, member, with_user=False
                )

        def add_role(role: FakeRole) -> None:
            resolved.setdefault("roles", {})[str(role.id)] = role.to_payload()

        def add_channel(channel: FakeChannel) -> None:
            assert guild is not None
            payload = channel.to_payload(guild.id)
            payload["permissions"] = str(ALL_PERMISSIONS)
            resolved.setdefault("channels", {})[str(channel.id)] = payload

        if isinstance(value, FakeMember):
            value = value.user
        if isinstance(value, FakeUser):
            add_user(value)
            return declared or 6, str(value.id)
        if isinstance(value, FakeRole):
            add_role(value)
            return declared or 8, str(value.id)
        if isinstance(value, FakeChannel):
            add_channel(value)
            return declared or 7, str(value.id)
        if (
            declared in (6, 7, 8, 9)
            and isinstance(value, int | str)
            and not isinstance(value, bool)
        ):
            snowflake = int(value)
            if declared in (6, 9):
                user = self._find_user(snowflake)
                if user is not None:
                    add_user(user)
            if declared in (8, 9) and guild is not None:
                role = guild.get_role(snowflake)
                if role is not None:
                    add_role(role)
            if declared == 7 and guild is not None:
                channel = guild.get_channel(snowflake)
                if channel is not None:
                    add_channel(channel)
            return declared, str(snowflake)
        if declared is not None:
            return declared, value
        if isinstance(value, bool):
            return 5, value
        if isinstance(value, int):
            return 4, value
        if isinstance(value, float):
            return 10, value
        return 3, value

    def _build_options(
        self,
        schema: Sequence[JSON],
        options: Mapping[str, Any] | Sequence[JSON] | None,
        guild: FakeGuild | None,
        resolved: dict[str, dict[str, JSON]],
        focused: str | None,
    ) -> list[JSON]:
        if options is None:
            return []
        if not isinstance(options, Mapping):
            return [dict(o) for o in options]
        by_name = {str(o.get("name")): o for o in schema}
        built: list[JSON] = []
        for name, value in options.items():
            declared = by_name.get(name, {}).get("type")
            option_type, option_value = self._resolve_value(value, declared, guild, resolved)
            option: JSON = {"name": name, "type": option_type, "value": option_value}
            if focused == name:
                option["focused"] = True
            built.append(option)
        return built

    async def interaction_create(
        self,
        name: str,
        options: Mapping[str, Any] | Sequence[JSON] | None = None,
        *,
        guild_id: int | None = None,
        channel_id: int | None = None,
        user: FakeUser | FakeMember | int | None = None,
        dm: bool = False,
        type: int = 2,
        command_type: int = 1,
        focused: str | None = None,
        target_id: int | None = None,
        locale: str = "en-US",
        gateway: bool = True,
    ) -> FakeInteraction:
        """A user runs the application command ``name`` (type 2; type 4: autocomplete).

        ``name`` may hold a subcommand path: ``"tag create"``.  ``options`` maps option
        names to values; the option types come from the synced command when the bot
        has synced it, else from the Python type (``FakeUser``/``FakeRole``/
        ``FakeChannel`` values become user/role/channel options with ``resolved``
        data).  A list of raw option dicts is passed through unchanged.  Defaults:
        first guild, its first text channel, the guild owner.
        """
        guild = None if dm else self.get_guild(guild_id)
        who = self._resolve_user(user, guild)
        root, *path = name.split()
        command, guild_scoped = self._find_command(
            root, guild.id if guild is not None else None, command_type
        )
        schema: list[JSON] = list((command or {}).get("options") or [])
        path_types: list[int] = []
        for index, part in enumerate(path):
            entry = next((o for o in schema if o.get("name") == part), None)
            default_type = 1 if index == len(path) - 1 else 2
            path_types.append(int(entry["type"]) if entry else default_type)
            schema = list((entry or {}).get("options") or [])
        resolved: dict[str, dict[str, JSON]] = {}
        built = self._build_options(schema, options, guild, resolved, focused)
        for part, part_type in reversed(list(zip(path, path_types, strict=True))):
            built = [{"name": part, "type": part_type, "options": built}]
        data: JSON = {
            "id": str(command["id"]) if command else str(new_snowflake()),
            "name": root,
            "type": command_type,
        }
        if built or command_type == 1:
            data["options"] = built
        if guild_scoped and guild is not None:
            data["guild_id"] = str(guild.id)
        if target_id is not None:
            data["target_id"] = str(target_id)
        if resolved:
            data["resolved"] = resolved
        return await self.interaction_raw(
            type, data, guild_id=None if guild is None else guild.id, channel_id=channel_id,
            user=who, dm=dm, locale=locale, gateway=gateway,
        )  # fmt: skip

    async def autocomplete(
        self,
        name: str,
        options: Mapping[str, Any] | Sequence[JSON] | None,
        focused: str,
        **kwargs: Any,
    ) -> FakeInteraction:
        """An autocomplete interaction (type 4) with ``focused`` being typed."""
        return await self.interaction_create(name, options, type=4, focused=focused, **kwargs)

    async def component_interaction(
        self,
        message_id: int,
        custom_id: str,
        *,
        component_type: int = 2,
        values: Sequence[str] | None = None,
        user: FakeUser | FakeMember | int | None = None,
        gateway: bool = True,
    ) -> FakeInteraction:
        """A user clicks a button (or picks in a select) on a stored message."""
        message = self._message(message_id)
        data: JSON = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = list(values)
        guild_id = int(message["guild_id"]) if "guild_id" in message else None
        interaction = await self.interaction_raw(
            3, data, guild_id=guild_id, channel_id=int(message["channel_id"]), user=user,
            dm=guild_id is None, message=message, gateway=gateway,
        )  # fmt: skip
        return interaction

    async def interaction_raw(
        self,
        type: int,
        data: JSON,
        *,
        guild_id: int | None = None,
        channel_id: int | None = None,
        user: FakeUser | FakeMember | int | None = None,
        dm: bool = False,
        locale: str = "en-US",
        message: JSON | None = None,
        gateway: bool = True,
    ) -> FakeInteraction:
        """Send an INTERACTION_CREATE of any ``type`` with this ``data`` (e.g. a modal
        submit, type 5) and return its record.  ``gateway=False`` only records it:
        deliver it to an HTTP Interactions Endpoint with :meth:`post_interaction`."""
        guild = None if dm else self.get_guild(guild_id)
        who = self._resolve_user(user, guild)
        interaction_id = new_snowflake()
        token = "fake-" + secrets.token_hex(24)
        payload: JSON = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": type,
            "token": token,
            "version": 1,
            "data": data,
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": _ATTACHMENT_SIZE_LIMIT,
        }
        if guild is not None:
            if channel_id is None:
                channel_id = guild.first_text_channel().id
            channel = guild.get_channel(channel_id)
            if channel is None:
                raise LookupError(f"guild {guild.id} has no channel {channel_id}")
            member = guild.get_member(who.id)
            if member is None:
                raise LookupError(f"user {who.id} is not in guild {guild.id}")
            channel_payload = channel.to_payload(guild.id)
            channel_payload["permissions"] = str(guild.permissions_of(member))
            payload.update(
                guild_id=str(guild.id),
                guild={"id": str(guild.id), "locale": guild.preferred_locale, "features": []},
                guild_locale=guild.preferred_locale,
                channel_id=str(channel_id),
                channel=channel_payload,
                member=self._member_payload(guild, member),
                app_permissions=str(guild.permissions_of(self._bot_member(guild))),
                authorizing_integration_owners={"0": str(guild.id)},
                context=0,
            )
        else:
            channel_id = self.dm_channel_id(who.id)
            dm_payload = self._channel_payload(channel_id)
            assert dm_payload is not None
            payload.update(
                channel_id=str(channel_id),
                channel=dm_payload,
                user=who.to_payload(),
                app_permissions=str(DEFAULT_EVERYONE_PERMISSIONS),
                authorizing_integration_owners={"0": "0"},
                context=1,
            )
        if message is not None:
            payload["message"] = message
        interaction = FakeInteraction(
            id=interaction_id,
            token=token,
            type=type,
            guild_id=None if guild is None else guild.id,
            channel_id=channel_id,
            user=who,
            payload=payload,
            message_id=None if message is None else int(message["id"]),
        )
        self.interactions[interaction_id] = interaction
        self._interaction_tokens[token] = interaction
        if gateway:
            await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    async def post_interaction(
        self,
        url: str,
        interaction: FakeInteraction | JSON,
        sign: Callable[[bytes], str] | None,
        *,
        timestamp: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """POST an interaction to an HTTP Interactions Endpoint, as Discord does.

        ``sign(timestamp + body)`` returns the hex Ed25519 signature (the test holds
        the key; None: no signature headers).  A 200 answer carrying a callback is
        applied as the REST callback would be (and recorded as a ``POST
        /interactions/{id}/{token}/callback`` call), so follow-ups and edits work.
        Returns the status and the decoded answer.
        """
        payload = interaction.payload if isinstance(interaction, FakeInteraction) else interaction
        body = _dumps(payload).encode()
        sent = str(int(time.time()) if timestamp is None else timestamp)
        request_headers = {"Content-Type": "application/json"}
        if sign is not None:
            request_headers["X-Signature-Timestamp"] = sent
            request_headers["X-Signature-Ed25519"] = sign(sent.encode() + body)
        request_headers.update(headers or {})
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=body, headers=request_headers) as response,
        ):
            status = response.status
            text = await response.text()
        try:
            answer: Any = json.loads(text) if text else None
        except ValueError:
            answer = text
        found = None
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            found = self.interactions.get(int(payload.get("id", 0)))
        if status == 200 and isinstance(answer, dict) and "type" in answer and found is not None:
            path = f"/interactions/{found.id}/{found.token}/callback"
            reply = await self._h_callback(
                _ApiRequest("POST", path, {}, answer, (), None),
                {"interaction": str(found.id), "token": found.token},
            )
            self._record(
                RecordedCall(
                    method="POST", path=path, query={}, json=answer, files=(),
                    status=reply.status, response=reply.body,
                )
            )  # fmt: skip
        return status, answer

    # ------------------------------------------------------------------ gateway: server

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(timeout=5.0, max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        self.gateway_connections.append(dict(request.query))
        zlib_stream = self.zlib_stream and request.query.get("compress") == "zlib-stream"
        conn = _Connection(ws, zlib_stream=zlib_stream)
        self._connections.add(conn)
        try:
            await conn.send(
                {
                    "op": 10,
                    "s": None,
                    "t": None,
                    "d": {"heartbeat_interval": self.heartbeat_interval},
                }
            )
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    try:
                        await self._gateway_op(conn, json.loads(msg.data))
                    except Exception as exc:
                        _log.exception("FakeDiscord gateway error")
                        self.errors.append(exc)
                        await ws.close(code=4000, message=b"fake discord error")
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    await ws.close(code=4002, message=b"decode error")
        finally:
            self._connections.discard(conn)
            session = conn.session
            if session is not None and session.conn is conn:
                session.conn = None
                # A clean close (1000/1001) ends the session; anything else may RESUME.
                if ws.close_code in (1000, 1001):
                    self._sessions.pop(session.id, None)
        return ws

    async def _gateway_op(self, conn: _Connection, payload: JSON) -> None:
        op = payload.get("op")
        data = payload.get("d")
        logged = dict(payload)
        if isinstance(data, dict) and "token" in data:
            logged["d"] = {**data, "token": "<token>"}
        self.received.append(logged)
        if op == 1:
            await conn.send({"op": 11, "s": None, "t": None, "d": None})
        elif op == 2:
            await self._identify(conn, data or {})
        elif op == 3 and conn.session is not None:
            conn.session.presence = data
        elif op == 6:
            await self._resume(conn, data or {})
        elif op == 8:
            await self._request_members(conn, data or {})

    def _token_ok(self, token: Any) -> bool:
        return self.required_token is None or token == self.required_token

    async def _identify(self, conn: _Connection, data: JSON) -> None:
        if conn.session is not None:
            await conn.ws.close(code=4005, message=b"Already authenticated.")
            return
        if not self._token_ok(data.get("token")):
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        shard: tuple[int, int] | None = None
        raw_shard = data.get("shard")
        if raw_shard is not None:
            shard = (int(raw_shard[0]), int(raw_shard[1]))
            if shard[1] < 1 or not 0 <= shard[0] < shard[1]:
                await conn.ws.close(code=4010, message=b"Invalid shard.")
                return
        shard_id = 0 if shard is None else shard[0]
        rejected = self._identify_rejected(shard_id)
        if rejected is not None:
            self.identify_rejections.append((shard_id, rejected))
            await conn.send({"op": 9, "s": None, "t": None, "d": False})
            return
        intents = data.get("intents")
        session = _Session(shard, None if intents is None else int(intents))
        session.presence = data.get("presence")
        # Stale, disconnected sessions of the same shard are superseded.
        for old in list(self._sessions.values()):
            if old.conn is None and old.shard == shard:
                self._sessions.pop(old.id, None)
        async with session.lock:
            self._sessions[session.id] = session
            session.conn = conn
            conn.session = session
            guilds = [g for g in self.guilds.values() if session.has_guild(g.id)]
            ready: JSON = {
                "v": 10,
                "user": self._me_payload(),
                "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
                "session_id": session.id,
                "session_type": "normal",
                "resume_gateway_url": self.gateway_url,
                "application": {"id": str(self.application_id), "flags": _APPLICATION_FLAGS},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "user_settings": {},
                "geo_ordered_rtc_regions": [],
                "guild_join_requests": [],
                "auth_session_id_hash": secrets.token_hex(8),
                "_trace": ["fake-discord"],
            }
            if shard is not None:
                ready["shard"] = [shard[0], shard[1]]
            await session._send_locked("READY", ready)
            self.events.append(DispatchedEvent("READY", ready, (session.shard_id,)))
            for guild in guilds:
                payload = self.guild_payload(guild)
                await session._send_locked("GUILD_CREATE", payload)
                self.events.append(DispatchedEvent("GUILD_CREATE", payload, (session.shard_id,)))
        self._session_waiters.notify(session)

    def _identify_rejected(self, shard_id: int) -> str | None:
        """Why Discord would refuse this IDENTIFY (op 9), or None: budget and bucket."""
        if self.session_start_remaining <= 0:
            return "session start limit spent"
        now = asyncio.get_running_loop().time()
        bucket = shard_id % max(1, self.max_concurrency)
        if self.enforce_identify_buckets:
            last = self._bucket_last.get(bucket)
            if last is not None and now - last < self.identify_window:
                return f"bucket {bucket} busy"
        self._bucket_last[bucket] = now
        self.session_start_remaining -= 1
        self.identifies.append((shard_id, now))
        return None

    async def _resume(self, conn: _Connection, data: JSON) -> None:
        session = self._sessions.get(str(data.get("session_id")))
        if session is None or not self._token_ok(data.get("token")) or conn.session is not None:
            await conn.send({"op": 9, "s": None, "t": None, "d": False})
            return
        old = session.conn
        if old is not None and old is not conn:
            old.session = None
            await old.ws.close(code=4000, message=b"session resumed elsewhere")
        seq = int(data.get("seq") or 0)
        async with session.lock:
            session.conn = conn
            conn.session = session
            for missed in list(session.buffer):
                if int(missed["s"]) > seq and not await conn.send(missed):
                    break
            resumed: JSON = {"_trace": ["fake-discord"]}
            await session._send_locked("RESUMED", resumed)
            self.events.append(DispatchedEvent("RESUMED", resumed, (session.shard_id,)))
        self._session_waiters.notify(session)

    async def _request_members(self, conn: _Connection, data: JSON) -> None:
        session = conn.session
        if session is None:
            return
        raw_ids = data.get("guild_id")
        guild_ids: list[Any] = raw_ids if isinstance(raw_ids, list) else [raw_ids]
        for raw_id in guild_ids:
            guild = self.guilds.get(int(raw_id or 0))
            if guild is None:
                continue
            members = list(guild.members)
            not_found: list[str] = []
            if data.get("user_ids"):
                wanted = [int(u) for u in data["user_ids"]]
                members = [m for m in members if m.user.id in wanted]
                found = {m.user.id for m in members}
                not_found = [str(u) for u in wanted if u not in found]
            elif data.get("query"):
                query = str(data["query"]).lower()
                members = [
                    m
                    for m in members
                    if m.user.username.lower().startswith(query)
                    or (m.nick or "").lower().startswith(query)
                ]
            limit = int(data.get("limit") or 0)
            if limit:
                members = members[:limit]
            chunk: JSON = {
                "guild_id": str(guild.id),
                "members": [m.to_payload() for m in members],
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": not_found,
            }
            if data.get("nonce"):
                chunk["nonce"] = data["nonce"]
            if data.get("presences"):
                chunk["presences"] = []
            await session.dispatch("GUILD_MEMBERS_CHUNK", chunk)
            self.events.append(DispatchedEvent("GUILD_MEMBERS_CHUNK", chunk, (session.shard_id,)))

    async def request_reconnect(self, shard_id: int | None = None) -> int:
        """Send op 7 RECONNECT (discord.py then RESUMEs); returns how many sessions got it."""
        count = 0
        for session in list(self._sessions.values()):
            if session.conn is not None and (shard_id is None or session.shard_id == shard_id):
                await session.conn.send({"op": 7, "s": None, "t": None, "d": None})
                count += 1
        return count

    async def invalidate_sessions(self, shard_id: int | None = None) -> int:
        """Send op 9 INVALID_SESSION (not resumable): the client has to IDENTIFY again."""
        count = 0
        for session in list(self._sessions.values()):
            if shard_id is None or session.shard_id == shard_id:
                self._sessions.pop(session.id, None)
                if session.conn is not None:
                    await session.conn.send({"op": 9, "s": None, "t": None, "d": False})
                    count += 1
        return count

    # ------------------------------------------------------------------ REST: server

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        stored = self._cdn_files.get(request.match_info["tail"])
        if stored is None:
            return web.Response(body=_PIXEL_PNG, content_type="image/png")
        data, content_type = stored
        return web.Response(body=data, headers={"Content-Type": content_type})

    async def _read_body(self, request: web.Request) -> tuple[Any, tuple[RecordedFile, ...]]:
        if not request.can_read_body:
            return None, ()
        if request.content_type.startswith("multipart/"):
            payload: Any = None
            files: list[RecordedFile] = []
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, aiohttp.BodyPartReader):
                    continue
                raw = await part.read(decode=False)
                if part.name == "payload_json":
                    payload = json.loads(raw.decode())
                else:
                    files.append(
                        RecordedFile(
                            field=part.name or "",
                            filename=part.filename,
                            content_type=part.headers.get("Content-Type"),
                            data=bytes(raw),
                        )
                    )
            return payload, tuple(files)
        text = await request.text()
        if not text:
            return None, ()
        try:
            return json.loads(text), ()
        except ValueError:
            return text, ()

    async def _api(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body, files = await self._read_body(request)
        reason = request.headers.get("X-Audit-Log-Reason")
        if reason is not None:  # discord.py percent-encodes it; Discord shows it decoded
            reason = urllib.parse.unquote(reason)
        api_request = _ApiRequest(request.method, path, dict(request.query), body, files, reason)
        authorization = request.headers.get("Authorization", "")
        webhook_route = path.startswith(("/webhooks/", "/interactions/"))
        if self.required_token is not None and not webhook_route:
            token = authorization.removeprefix("Bot ")
            reply = _error(401, 0, "401: Unauthorized") if not self._token_ok(token) else None
        else:
            reply = None
        verdict = None
        if reply is None and self.rest.active:
            verdict = self.rest.check(request.method, *self.route_template(request.method, path))
            if verdict.status is not None:
                reply = _Reply(verdict.status, verdict.body)
        if reply is None:
            try:
                reply = await self._route(api_request)
            except Exception as exc:
                _log.exception("FakeDiscord REST handler failed for %s %s", request.method, path)
                self.errors.append(exc)
                reply = _error(500, 0, f"fake discord error: {exc!r}")
        self._record(
            RecordedCall(
                method=request.method,
                path=path,
                query=dict(request.query),
                json=body,
                files=files,
                status=reply.status,
                response=reply.body,
                reason=reason,
            )
        )
        headers = verdict.headers if verdict is not None else None
        if self.rest.active or verdict is not None:
            self.rest.answered(reply.status, verdict.scope if verdict is not None else None)
        if reply.status == 204:  # No Content, as Discord answers kicks and bans
            return web.Response(status=204, headers=headers)
        if verdict is not None and verdict.text:  # a Cloudflare ban page
            return web.Response(
                status=reply.status, text=reply.body, content_type="text/plain", headers=headers
            )
        return web.Response(
            status=reply.status,
            body=_dumps(reply.body).encode(),
            content_type="application/json",
            headers=headers,
        )

    def route_template(self, method: str, path: str) -> tuple[str, dict[str, str]]:
        """``("POST /channels/{channel}/messages", {"channel": "42"})`` for a request:
        the route a REST limit applies to, and its parameters."""
        for route_method, pattern, _ in self._routes:
            if route_method == method:
                match = pattern.fullmatch(path)
                if match is not None:
                    template = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern.pattern)
                    return f"{method} {template}", match.groupdict()
        return method + " " + re.sub(r"/\d+", "/{id}", path), {}

    async def _route(self, request: _ApiRequest) -> _Reply:
        for method, pattern, handler in self._routes:
            if method != request.method:
                continue
            match = pattern.fullmatch(request.path)
            if match is not None:
                return await handler(request, {k: v for k, v in match.groupdict().items()})
        if request.method == "GET":
            return _error(404, 0, "404: Not Found")
        return _Reply(200, {})

    def _build_routes(self) -> list[tuple[str, re.Pattern[str], _Handler]]:
        app = r"/applications/(?P<app>\d+)"
        guild_cmds = rf"{app}/guilds/(?P<guild>\d+)/commands"
        webhook = r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)"
        message = r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)"
        reactions = rf"{message}/reactions"
        table: list[tuple[str, str, _Handler]] = [
            ("GET", r"/users/@me", self._h_me),
            ("PATCH", r"/users/@me", self._h_me),
            ("GET", r"/users/(?P<user>\d+)", self._h_user),
            ("POST", r"/users/@me/channels", self._h_create_dm),
            ("GET", r"/gateway", self._h_gateway),
            ("GET", r"/gateway/bot", self._h_gateway_bot),
            ("GET", r"/oauth2/applications/@me", self._h_application),
            ("GET", r"/applications/@me", self._h_application),
            ("GET", rf"{app}/commands", self._h_list_commands),
            ("PUT", rf"{app}/commands", self._h_put_commands),
            ("POST", rf"{app}/commands", self._h_upsert_command),
            ("GET", rf"{app}/commands/(?P<command>\d+)", self._h_get_command),
            ("PATCH", rf"{app}/commands/(?P<command>\d+)", self._h_edit_command),
            ("DELETE", rf"{app}/commands/(?P<command>\d+)", self._h_delete_command),
            ("GET", rf"{guild_cmds}/permissions", self._h_empty_list),
            ("GET", rf"{guild_cmds}", self._h_list_commands),
            ("PUT", rf"{guild_cmds}", self._h_put_commands),
            ("POST", rf"{guild_cmds}", self._h_upsert_command),
            ("GET", rf"{guild_cmds}/(?P<command>\d+)", self._h_get_command),
            ("PATCH", rf"{guild_cmds}/(?P<command>\d+)", self._h_edit_command),
            ("DELETE", rf"{guild_cmds}/(?P<command>\d+)", self._h_delete_command),
            ("GET", rf"{app}/emojis", self._h_empty_items),
            ("GET", rf"{app}/entitlements", self._h_empty_list),
            ("GET", rf"{app}/skus", self._h_empty_list),
            (
                "POST",
                r"/interactions/(?P<interaction>\d+)/(?P<token>[^/]+)/callback",
                self._h_callback,
            ),
            ("GET", rf"{webhook}/messages/@original", self._h_get_original),
            ("PATCH", rf"{webhook}/messages/@original", self._h_edit_original),
            ("DELETE", rf"{webhook}/messages/@original", self._h_delete_original),
            ("POST", webhook, self._h_followup),
            ("GET", rf"{webhook}/messages/(?P<message>\d+)", self._h_get_followup),
            ("PATCH", rf"{webhook}/messages/(?P<message>\d+)", self._h_edit_followup),
            ("DELETE", rf"{webhook}/messages/(?P<message>\d+)", self._h_delete_followup),
            ("GET", r"/guilds/(?P<guild>\d+)", self._h_guild),
            ("GET", r"/guilds/(?P<guild>\d+)/channels", self._h_guild_channels),
            ("GET", r"/guilds/(?P<guild>\d+)/roles", self._h_guild_roles),
            ("GET", r"/guilds/(?P<guild>\d+)/members", self._h_guild_members),
            ("GET", r"/guilds/(?P<guild>\d+)/members/(?P<user>\d+)", self._h_guild_member),
            ("PATCH", r"/guilds/(?P<guild>\d+)/members/(?P<user>\d+)", self._h_edit_member),
            ("DELETE", r"/guilds/(?P<guild>\d+)/members/(?P<user>\d+)", self._h_kick),
            ("GET", r"/guilds/(?P<guild>\d+)/bans/(?P<user>\d+)", self._h_get_ban),
            ("PUT", r"/guilds/(?P<guild>\d+)/bans/(?P<user>\d+)", self._h_ban),
            ("DELETE", r"/guilds/(?P<guild>\d+)/bans/(?P<user>\d+)", self._h_unban),
            ("GET", r"/channels/(?P<channel>\d+)", self._h_channel),
            ("POST", r"/channels/(?P<channel>\d+)/messages", self._h_send_message),
            ("GET", r"/channels/(?P<channel>\d+)/messages", self._h_history),
            ("GET", message, self._h_get_message),
            ("PATCH", message, self._h_edit_message),
            ("DELETE", message, self._h_delete_message),
            ("PUT", rf"{reactions}/(?P<emoji>[^/]+)/@me", self._h_add_reaction),
            ("DELETE", rf"{reactions}/(?P<emoji>[^/]+)/(?P<user>@me|\d+)", self._h_remove_reaction),
            ("GET", rf"{reactions}/(?P<emoji>[^/]+)", self._h_reaction_users),
            ("DELETE", rf"{reactions}", self._h_clear_reactions),
            ("DELETE", rf"{reactions}/(?P<emoji>[^/]+)", self._h_clear_reactions),
        ]
        return [(m, re.compile(p), h) for m, p, h in table]

    # -- users, gateway, application

    async def _h_me(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        return _Reply(200, self._me_payload())

    async def _h_user(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        user = self._find_user(int(args["user"]))
        return _Reply(200, user.to_payload()) if user else _unknown("User", 10013)

    async def _h_create_dm(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        user_id = int((request.json or {}).get("recipient_id", 0))
        if self._find_user(user_id) is None:
            return _unknown("User", 10013)
        payload = self._channel_payload(self.dm_channel_id(user_id))
        return _Reply(200, payload)

    async def _h_gateway(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        return _Reply(200, {"url": self.gateway_url})

    async def _h_gateway_bot(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        return _Reply(
            200,
            {
                "url": self.gateway_url,
                "shards": self.recommended_shards,
                "session_start_limit": {
                    "total": self.session_start_limit,
                    "remaining": max(0, self.session_start_remaining),
                    "reset_after": 14_400_000,
                    "max_concurrency": self.max_concurrency,
                },
            },
        )

    async def _h_application(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        return _Reply(
            200,
            {
                "id": str(self.application_id),
                "name": self.bot.username,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": _APPLICATION_FLAGS,
                "owner": self.app_owner.to_payload(),
                "team": None,
                "hook": True,
                "rpc_origins": [],
                "redirect_uris": [],
                "tags": [],
                "interactions_endpoint_url": None,
                "approximate_guild_count": len(self.guilds),
                "bot": self.bot.to_payload(),
            },
        )

    async def _h_empty_list(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        return _Reply(200, [])

    async def _h_empty_items(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        return _Reply(200, {"items": []})

    # -- application commands

    def _command_list(self, args: dict[str, str]) -> list[JSON] | None:
        if int(args["app"]) != self.application_id:
            return None
        if "guild" in args:
            return self.guild_commands.setdefault(int(args["guild"]), [])
        return self.global_commands

    @staticmethod
    def _validate_command(command: Any) -> str | None:
        if not isinstance(command, dict) or not isinstance(command.get("name"), str):
            return "command must be an object with a name"
        name = command["name"]
        command_type = int(command.get("type", 1))
        if command_type == 1:
            if not _COMMAND_NAME.fullmatch(name) or name != name.lower():
                return f"invalid chat input command name {name!r}"
            description = command.get("description") or ""
            if not 1 <= len(description) <= 100:
                return f"command {name!r}: description must be 1-100 characters"
        elif not 1 <= len(name) <= 32:
            return f"invalid context menu name {name!r}"
        options = command.get("options") or []
        if len(options) > 25:
            return f"command {name!r}: more than 25 options"
        seen_optional = False
        for option in options:
            if option.get("type") in (1, 2):
                continue
            if option.get("required"):
                if seen_optional:
                    return f"command {name!r}: required options must come before optional ones"
            else:
                seen_optional = True
        return None

    def _stored_command(self, command: JSON, args: dict[str, str], existing: JSON | None) -> JSON:
        stored: JSON = {
            "type": 1,
            "description": "",
            "options": [],
            "default_member_permissions": None,
            "dm_permission": True,
            "nsfw": False,
            "contexts": None,
            "integration_types": [0],
            **command,
        }
        stored.update(
            id=existing["id"] if existing is not None else str(new_snowflake()),
            application_id=str(self.application_id),
            version=str(new_snowflake()),
        )
        if "guild" in args:
            stored["guild_id"] = args["guild"]
        return stored

    async def _h_list_commands(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        commands = self._command_list(args)
        return _Reply(200, commands) if commands is not None else _unknown("Application", 10002)

    async def _h_put_commands(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        commands = self._command_list(args)
        if commands is None:
            return _unknown("Application", 10002)
        payload = request.json if isinstance(request.json, list) else []
        seen: set[tuple[str, int]] = set()
        for command in payload:
            problem = self._validate_command(command)
            key = (str(command.get("name")), int(command.get("type", 1)))
            if problem is None and key in seen:
                problem = f"duplicate command {key[0]!r}"
            if problem is not None:
                return _error(400, 50035, f"Invalid Form Body: {problem}")
            seen.add(key)
        old = {(c["name"], c.get("type", 1)): c for c in commands}
        new = [
            self._stored_command(c, args, old.get((c["name"], c.get("type", 1)))) for c in payload
        ]
        commands[:] = new
        return _Reply(200, new)

    async def _h_upsert_command(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        commands = self._command_list(args)
        if commands is None:
            return _unknown("Application", 10002)
        problem = self._validate_command(request.json)
        if problem is not None:
            return _error(400, 50035, f"Invalid Form Body: {problem}")
        command: JSON = request.json
        for index, existing in enumerate(commands):
            if (existing["name"], existing.get("type", 1)) == (
                command["name"],
                command.get("type", 1),
            ):
                commands[index] = self._stored_command(command, args, existing)
                return _Reply(200, commands[index])
        stored = self._stored_command(command, args, None)
        commands.append(stored)
        return _Reply(201, stored)

    def _command_by_id(self, args: dict[str, str]) -> tuple[list[JSON] | None, JSON | None]:
        commands = self._command_list(args)
        if commands is None:
            return None, None
        found = next((c for c in commands if c["id"] == args["command"]), None)
        return commands, found

    async def _h_get_command(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        _, command = self._command_by_id(args)
        return _Reply(200, command) if command else _unknown("application command", 10063)

    async def _h_edit_command(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        commands, command = self._command_by_id(args)
        if commands is None or command is None:
            return _unknown("application command", 10063)
        command.update(request.json or {})
        command["version"] = str(new_snowflake())
        return _Reply(200, command)

    async def _h_delete_command(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        commands, command = self._command_by_id(args)
        if commands is None or command is None:
            return _unknown("application command", 10063)
        commands.remove(command)
        return _Reply(200, {})

    # -- interactions

    async def _h_callback(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        interaction = self.interactions.get(int(args["interaction"]))
        if interaction is None or interaction.token != args["token"]:
            return _unknown("interaction", 10062)
        if interaction.responded:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        deadline = self.interaction_deadline
        if deadline is not None and time.monotonic() - interaction.created > deadline:
            return _unknown("interaction", 10062)
        body: JSON = request.json if isinstance(request.json, dict) else {}
        response_type = int(body.get("type", 0))
        data: JSON = body.get("data") or {}
        interaction.response_type = response_type
        interaction.response_data = data
        flags = int(data.get("flags") or 0)
        resource: JSON | None = {"type": response_type}
        message: JSON | None = None
        if response_type in (4, 5):
            if response_type == 5:
                flags |= _MESSAGE_FLAG_LOADING
                message_body: JSON = {"content": "", "flags": flags}
            else:
                message_body = {**data, "flags": flags}
            message = self._new_message(
                channel_id=interaction.channel_id,
                author=self.bot,
                body=message_body,
                files=request.files,
                webhook=True,
                interaction=interaction,
            )
            interaction.original_message_id = int(message["id"])
            await self._echo("MESSAGE_CREATE", message)
        elif response_type == 7 and interaction.message_id in self.messages:
            message = self.messages[interaction.message_id]
            self._apply_edit(message, data, request.files)
            await self._echo("MESSAGE_UPDATE", message)
        elif response_type in (1, 8):
            resource = None
        if resource is not None and message is not None:
            resource["message"] = message
        if request.query.get("with_response") not in ("1", "true", "True"):
            return _Reply(200, {})
        result: JSON = {
            "interaction": {
                "id": str(interaction.id),
                "type": interaction.type,
                "activity_instance_id": None,
                "response_message_id": None if message is None else message["id"],
                "response_message_loading": response_type == 5,
                "response_message_ephemeral": bool(flags & _MESSAGE_FLAG_EPHEMERAL),
            },
            "resource": resource,
        }
        return _Reply(200, result)

    def create_webhook(
        self, channel_id: int | None = None, name: str = "wisp-webhook"
    ) -> FakeWebhook:
        """A webhook in ``channel_id`` (default: the default guild's first channel)."""
        if channel_id is None:
            channel_id = self.default_guild.channels[0].id
        hook = FakeWebhook(new_snowflake(), secrets.token_urlsafe(51), channel_id, name)
        self.webhooks[hook.id] = hook
        return hook

    def webhook_messages(self, hook: FakeWebhook) -> list[JSON]:
        """The messages ``hook`` has posted, oldest first."""
        return [m for m in self.messages.values() if m.get("webhook_id") == str(hook.id)]

    async def _execute_webhook(
        self, hook: FakeWebhook, request: _ApiRequest, args: dict[str, str]
    ) -> _Reply:
        if args["token"] != hook.token:
            return _error(401, 50027, "Invalid Webhook Token")
        body: JSON = request.json if isinstance(request.json, dict) else {}
        if not _has_message_content(body, request.files):
            return _error(400, 50006, "Cannot send an empty message")
        if len(str(body.get("content") or "")) > 2000:
            return _error(400, 50035, "Invalid Form Body: content must be 2000 or fewer in length.")
        if len(body.get("embeds") or []) > 10:
            return _error(400, 50035, "Invalid Form Body: embeds must be 10 or fewer in length.")
        message = self._new_message(
            channel_id=hook.channel_id, author=hook.user(), body=body, files=request.files
        )
        message["webhook_id"] = str(hook.id)
        await self._echo("MESSAGE_CREATE", message)
        return _Reply(200, message)

    def _webhook_interaction(self, args: dict[str, str]) -> FakeInteraction | None:
        if int(args["app"]) != self.application_id:
            return None
        return self._interaction_tokens.get(args["token"])

    def _original(self, args: dict[str, str]) -> tuple[FakeInteraction | None, JSON | None]:
        interaction = self._webhook_interaction(args)
        if interaction is None or interaction.original_message_id is None:
            return interaction, None
        return interaction, self.messages.get(interaction.original_message_id)

    async def _h_get_original(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        return self._get_message(self._original(args))

    async def _h_edit_original(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        return await self._edit_message(request, self._original(args))

    async def _h_delete_original(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        return await self._delete_message(self._original(args))

    # One behaviour for the original response and followups; only the lookup differs.

    @staticmethod
    def _get_message(found: tuple[FakeInteraction | None, JSON | None]) -> _Reply:
        interaction, message = found
        if interaction is None:
            return _unknown("Webhook", 10015)
        return _Reply(200, message) if message is not None else _unknown("Message", 10008)

    async def _edit_message(
        self, request: _ApiRequest, found: tuple[FakeInteraction | None, JSON | None]
    ) -> _Reply:
        interaction, message = found
        if interaction is None:
            return _unknown("Webhook", 10015)
        if message is None:
            return _unknown("Message", 10008)
        body: JSON = request.json if isinstance(request.json, dict) else {}
        self._apply_edit(message, body, request.files)
        await self._echo("MESSAGE_UPDATE", message)
        return _Reply(200, message)

    async def _delete_message(self, found: tuple[FakeInteraction | None, JSON | None]) -> _Reply:
        interaction, message = found
        if interaction is None:
            return _unknown("Webhook", 10015)
        if message is None:
            return _unknown("Message", 10008)
        self.messages.pop(int(message["id"]), None)
        await self._echo("MESSAGE_DELETE", message)
        return _Reply(200, {})

    async def _h_followup(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        hook = self.webhooks.get(int(args["app"]))
        if hook is not None:
            return await self._execute_webhook(hook, request, args)
        interaction = self._webhook_interaction(args)
        if interaction is None or not interaction.responded:
            return _unknown("Webhook", 10015)
        body: JSON = request.json if isinstance(request.json, dict) else {}
        if not _has_message_content(body, request.files):
            return _error(400, 50006, "Cannot send an empty message")
        original = (
            self.messages.get(interaction.original_message_id)
            if interaction.original_message_id is not None
            else None
        )
        if original is not None and int(original.get("flags") or 0) & _MESSAGE_FLAG_LOADING:
            # The first followup after a deferred response replaces the "thinking" message.
            self._apply_edit(
                original, {k: v for k, v in body.items() if k != "flags"}, request.files
            )
            await self._echo("MESSAGE_UPDATE", original)
            return _Reply(200, original)
        message = self._new_message(
            channel_id=interaction.channel_id,
            author=self.bot,
            body=body,
            files=request.files,
            webhook=True,
            interaction=interaction,
        )
        interaction.followup_ids.append(int(message["id"]))
        await self._echo("MESSAGE_CREATE", message)
        if request.query.get("wait") in ("1", "true", "True"):
            return _Reply(200, message)
        return _Reply(200, {})

    def _followup(self, args: dict[str, str]) -> tuple[FakeInteraction | None, JSON | None]:
        interaction = self._webhook_interaction(args)
        if interaction is None:
            return None, None
        message_id = int(args["message"])
        if message_id not in (*interaction.followup_ids, interaction.original_message_id):
            return interaction, None
        return interaction, self.messages.get(message_id)

    async def _h_get_followup(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        return self._get_message(self._followup(args))

    async def _h_edit_followup(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        return await self._edit_message(request, self._followup(args))

    async def _h_delete_followup(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        return await self._delete_message(self._followup(args))

    # -- guilds and channels

    async def _h_guild(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        guild = self.guilds.get(int(args["guild"]))
        if guild is None:
            return _unknown("Guild", 10004)
        payload = self.guild_payload(guild, full=False)
        if request.query.get("with_counts") in ("1", "true", "True"):
            payload.update(
                approximate_member_count=len(guild.members),
                approximate_presence_count=0,
            )
        return _Reply(200, payload)

    async def _h_guild_channels(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        guild = self.guilds.get(int(args["guild"]))
        if guild is None:
            return _unknown("Guild", 10004)
        return _Reply(200, [c.to_payload(guild.id) for c in guild.channels])

    async def _h_guild_roles(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        guild = self.guilds.get(int(args["guild"]))
        return _Reply(200, self._roles_payload(guild)) if guild else _unknown("Guild", 10004)

    async def _h_guild_members(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        guild = self.guilds.get(int(args["guild"]))
        if guild is None:
            return _unknown("Guild", 10004)
        after = int(request.query.get("after", 0))
        limit = int(request.query.get("limit", 1))
        members = sorted((m for m in guild.members if m.user.id > after), key=lambda m: m.user.id)[
            :limit
        ]
        return _Reply(200, [m.to_payload() for m in members])

    async def _h_guild_member(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        guild = self.guilds.get(int(args["guild"]))
        if guild is None:
            return _unknown("Guild", 10004)
        member = guild.get_member(int(args["user"]))
        return _Reply(200, member.to_payload()) if member else _unknown("Member", 10007)

    # -- moderation: timeouts (member edits), kicks, bans

    def _moderated(self, args: dict[str, str]) -> tuple[FakeGuild, int] | _Reply:
        guild = self.guilds.get(int(args["guild"]))
        if guild is None:
            return _unknown("Guild", 10004)
        user_id = int(args["user"])
        if user_id == guild.owner_id:  # Discord refuses to act on the owner
            return _error(403, 50013, "Missing Permissions")
        return guild, user_id

    async def _h_edit_member(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        found = self._moderated(args)
        if isinstance(found, _Reply):
            return found
        guild, user_id = found
        member = guild.get_member(user_id)
        if member is None:
            return _unknown("Member", 10007)
        body: JSON = request.json if isinstance(request.json, dict) else {}
        if "communication_disabled_until" in body:
            member.communication_disabled_until = body["communication_disabled_until"]
        if "nick" in body:
            member.nick = body["nick"]
        payload = {**member.to_payload(), "guild_id": str(guild.id)}
        await self.dispatch("GUILD_MEMBER_UPDATE", payload)
        return _Reply(200, member.to_payload())

    async def _remove_member(self, guild: FakeGuild, member: FakeMember) -> None:
        guild.members.remove(member)
        await self.dispatch(
            "GUILD_MEMBER_REMOVE", {"guild_id": str(guild.id), "user": member.user.to_payload()}
        )

    async def _h_kick(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        found = self._moderated(args)
        if isinstance(found, _Reply):
            return found
        guild, user_id = found
        member = guild.get_member(user_id)
        if member is None:
            return _unknown("Member", 10007)
        await self._remove_member(guild, member)
        return _Reply(204, None)

    async def _h_get_ban(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        guild = self.guilds.get(int(args["guild"]))
        user_id = int(args["user"])
        if guild is None or user_id not in guild.bans:
            return _unknown("Ban", 10026)
        user = self._find_user(user_id) or FakeUser(id=user_id, username=f"user{user_id}")
        return _Reply(200, {"reason": guild.bans[user_id], "user": user.to_payload()})

    async def _h_ban(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        found = self._moderated(args)
        if isinstance(found, _Reply):
            return found
        guild, user_id = found
        guild.bans[user_id] = request.reason
        member = guild.get_member(user_id)
        if member is not None:
            await self._remove_member(guild, member)
        return _Reply(204, None)

    async def _h_unban(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        guild = self.guilds.get(int(args["guild"]))
        if guild is None or guild.bans.pop(int(args["user"]), ...) is ...:
            return _unknown("Ban", 10026)
        return _Reply(204, None)

    async def _h_channel(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        payload = self._channel_payload(int(args["channel"]))
        return _Reply(200, payload) if payload is not None else _unknown("Channel", 10003)

    # -- messages

    async def _h_send_message(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        channel_id = int(args["channel"])
        if self._channel_payload(channel_id) is None:
            return _unknown("Channel", 10003)
        body: JSON = request.json if isinstance(request.json, dict) else {}
        if not _has_message_content(body, request.files):
            return _error(400, 50006, "Cannot send an empty message")
        if len(str(body.get("content") or "")) > 2000:
            return _error(400, 50035, "Invalid Form Body: content must be 2000 or fewer in length.")
        message = self._new_message(
            channel_id=channel_id, author=self.bot, body=body, files=request.files
        )
        await self._echo("MESSAGE_CREATE", message)
        return _Reply(200, message)

    async def _h_history(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        channel = args["channel"]
        limit = int(request.query.get("limit", 50))
        ordered = sorted(
            (m for m in self.messages.values() if m["channel_id"] == channel),
            key=lambda m: int(m["id"]),
        )
        if "after" in request.query:
            after = int(request.query["after"])
            picked = [m for m in ordered if int(m["id"]) > after][:limit]
        else:
            before = int(request.query.get("before", 1 << 63))
            picked = [m for m in ordered if int(m["id"]) < before][-limit:]
        return _Reply(200, list(reversed(picked)))

    def _channel_message(self, args: dict[str, str]) -> JSON | None:
        message = self.messages.get(int(args["message"]))
        if message is None or message["channel_id"] != args["channel"]:
            return None
        return message

    async def _h_get_message(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        message = self._channel_message(args)
        return _Reply(200, message) if message is not None else _unknown("Message", 10008)

    async def _h_edit_message(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        message = self._channel_message(args)
        if message is None:
            return _unknown("Message", 10008)
        if message["author"]["id"] != str(self.bot.id):
            return _error(403, 50005, "Cannot edit a message authored by another user")
        body: JSON = request.json if isinstance(request.json, dict) else {}
        self._apply_edit(message, body, request.files)
        await self._echo("MESSAGE_UPDATE", message)
        return _Reply(200, message)

    async def _h_delete_message(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        message = self._channel_message(args)
        if message is None:
            return _unknown("Message", 10008)
        self.messages.pop(int(message["id"]), None)
        await self._echo("MESSAGE_DELETE", message)
        return _Reply(200, {})

    async def _h_add_reaction(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        message = self._channel_message(args)
        if message is None:
            return _unknown("Message", 10008)
        emoji = _parse_emoji(args["emoji"])
        if self._set_reaction(message, emoji, self.bot.id, add=True) and self.echo:
            await self.dispatch(
                "MESSAGE_REACTION_ADD", self._reaction_event(message, emoji, self.bot.id, add=True)
            )
        return _Reply(200, {})

    async def _h_remove_reaction(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        message = self._channel_message(args)
        if message is None:
            return _unknown("Message", 10008)
        emoji = _parse_emoji(args["emoji"])
        user_id = self.bot.id if args["user"] == "@me" else int(args["user"])
        if self._set_reaction(message, emoji, user_id, add=False) and self.echo:
            await self.dispatch(
                "MESSAGE_REACTION_REMOVE", self._reaction_event(message, emoji, user_id, add=False)
            )
        return _Reply(200, {})

    async def _h_reaction_users(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        message = self._channel_message(args)
        if message is None:
            return _unknown("Message", 10008)
        key = _emoji_key(_parse_emoji(args["emoji"]))
        _, users = self._reactions.get(int(message["id"]), {}).get(key, ({}, []))
        found = [self._find_user(u) for u in users]
        return _Reply(200, [u.to_payload() for u in found if u is not None])

    async def _h_clear_reactions(self, request: _ApiRequest, args: dict[str, str]) -> _Reply:
        message = self._channel_message(args)
        if message is None:
            return _unknown("Message", 10008)
        per_message = self._reactions.get(int(message["id"]), {})
        if "emoji" in args:
            per_message.pop(_emoji_key(_parse_emoji(args["emoji"])), None)
        else:
            per_message.clear()
        self._refresh_reactions(message)
        return _Reply(200, {})


def _has_message_content(body: JSON, files: Sequence[RecordedFile]) -> bool:
    return bool(
        body.get("content")
        or body.get("embeds")
        or body.get("components")
        or body.get("sticker_ids")
        or body.get("poll")
        or files
    )


# --------------------------------------------------------------------------- discord.py


@contextlib.contextmanager
def patched_endpoints(fake: FakeDiscord) -> Iterator[FakeDiscord]:
    """Point discord.py at ``fake`` (which must be started) and restore afterwards.

    Sets ``discord.http.Route.BASE`` (every REST and webhook/interaction request,
    read when a ``Route`` is built), ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``
    (a plain ``Client`` connects there without asking GET /gateway/bot, and so does
    an ``AutoShardedClient`` given ``shard_count``) and ``discord.asset.Asset.BASE``
    (CDN URLs).  These are class attributes, so this is process-wide.
    """
    from wisp.plugins.discord.endpoints import endpoints

    with endpoints(fake.api_base, fake.gateway_url, fake.cdn_base):
        yield fake
