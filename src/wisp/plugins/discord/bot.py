"""The ``discord`` service: a discord.py bot whose commands and events run through Wisp.

Slash commands, prefix commands and events all become Wisp invocations
(``app.call`` / the event router), so they share the compiled pipeline,
contexts, error messages and logs.  The bot owns one application-command set,
synced only when its hash changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shlex
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands
from loguru import logger

import wisp
from wisp.context import InvocationType
from wisp.plugins.discord.appcommands import commands_payload, payload_hash, read_invocation
from wisp.plugins.discord.config import DiscordConfig
from wisp.plugins.discord.router import EventRouter
from wisp.responses import Outcome, Response
from wisp.targets import Choice, ParamType

__all__ = ["DiscordService"]

OutcomeListener = Callable[[str, Any, Outcome], Any]
#: ``gate(event, args) -> bool``: False drops a Discord event before Wisp sees it
#: (the cluster plugin's de-duplication while two shard generations overlap).
EventGate = Callable[[str, tuple[Any, ...]], Coroutine[Any, Any, bool]]


class _WispTree(app_commands.CommandTree):
    """discord.py's tree, told to leave Wisp's commands alone."""

    def __init__(self, client: discord.Client, service: DiscordService) -> None:
        super().__init__(client)
        self.service = service

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        data: Any = interaction.data or {}
        return data.get("name") not in self.service.roots


class _MessagesOnce:
    """discord.py's ``Bot.on_message`` runs ``process_commands`` (a task, a
    ``Context``, a prefix lookup) for every message even when no ``ext.commands``
    command exists.  Wisp's bot handles a message in that one task and asks
    discord.py's command machinery only once a plugin has added commands to it."""

    wisp_on_message: Callable[[discord.Message], Coroutine[Any, Any, None]]

    async def on_message(self, message: discord.Message) -> None:
        await self.wisp_on_message(message)
        bot: Any = self
        if bot.all_commands:
            await bot.process_commands(message)


class _Bot(_MessagesOnce, commands.Bot):
    pass


class _ShardedBot(_MessagesOnce, commands.AutoShardedBot):
    pass


class DiscordService(wisp.BaseService):
    """Builds the bot, connects it, and turns Discord traffic into Wisp invocations."""

    name = "discord"
    #: Connect only once storage is ready, when it runs (events use plugin_state).
    after = ("migrations", "guild_data", "plugin_state", "cluster", "restlimits")

    def __init__(
        self, app: wisp.Wisp, config: DiscordConfig, *, offline: bool = False, gateway: bool = True
    ) -> None:
        super().__init__()
        self.app = app
        self.config = config
        self.offline = offline
        #: False: log in for REST only (``wisp serve-interactions``); no gateway, no sync.
        self.gateway = gateway
        self.router = EventRouter(app, config)
        self.bot: commands.Bot | commands.AutoShardedBot | None = None
        self.roots: frozenset[str] = frozenset()
        self.listeners: list[OutcomeListener] = []
        #: Checked before an interaction, message or event is handled; empty: no cost.
        self.gates: list[EventGate] = []
        self._task: asyncio.Task[None] | None = None
        self._exits = contextlib.ExitStack()
        self.synced: list[dict[str, Any]] | None = None
        # Ids of messages and interactions fully handled, for drivers that wait.
        self._handled: OrderedDict[int, None] = OrderedDict()
        self._waiters: dict[int, asyncio.Future[None]] = {}

    # -- building ---------------------------------------------------------------

    def intents(self) -> discord.Intents:
        """``[discord] intents`` plus every intent an enabled plugin's record declares."""
        intents = discord.Intents.none()
        for name in (*self.config.intents, *self.app.pluginmanager.intents()):
            setattr(intents, name, True)
        return intents

    def build(self) -> commands.Bot | commands.AutoShardedBot:
        cfg = self.config
        kwargs: dict[str, Any] = {
            "command_prefix": commands.when_mentioned,
            "intents": self.intents(),
            "help_command": None,
            "tree_cls": lambda client: _WispTree(client, self),
        }
        bot: _Bot | _ShardedBot
        if self.offline:
            # The fake sends every guild at once: no need to wait for more.
            kwargs["guild_ready_timeout"] = 0.1
        if cfg.shard_count is not None:
            kwargs["shard_count"] = cfg.shard_count
            if cfg.shard_ids is not None:
                kwargs["shard_ids"] = cfg.shard_ids
        kwargs.update(self._plugin_options())
        if kwargs.get("shard_count") is not None:
            bot = _ShardedBot(**kwargs)
        else:
            kwargs.pop("shard_count", None)
            bot = _Bot(**kwargs)
        bot.wisp_on_message = self.on_message
        if self.offline:

            async def identify_at_once(shard_id: int | None, *, initial: bool = False) -> None:
                return None  # Discord's 5s identify spacing means nothing to the fake

            bot.before_identify_hook = identify_at_once  # type: ignore[method-assign]
        for _ in self.app.pluginmanager.results(
            "wisp_discord_client_created", app=self.app, client=bot
        ):
            pass
        bot.add_listener(self.on_interaction, "on_interaction")
        for discord_event, (wisp_event, shape) in EVENTS.items():
            bot.add_listener(self._router_for(wisp_event, shape), discord_event)
        return bot

    def _plugin_options(self) -> dict[str, Any]:
        """What ``wisp_discord_client_options`` implementations add; one key, one plugin."""
        options: dict[str, Any] = {}
        owners: dict[str, str] = {}
        for plugin, result in self.app.pluginmanager.results(
            "wisp_discord_client_options", app=self.app
        ):
            for key, value in dict(result).items():
                if key in owners:
                    raise wisp.PluginError(
                        f"plugins {owners[key]!r} and {plugin!r} both set the discord.py "
                        f"client option {key!r}; block one of them"
                    )
                owners[key] = plugin
                options[key] = value
        return options

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        _route_discord_logging()
        token = self.config.token or ("offline" if self.offline else "")
        if not token:
            raise wisp.ExternalServiceError(
                detail="no Discord token: set [discord] token or DISCORD_TOKEN, "
                "or run offline with `wisp run --offline`"
            )
        if not self.offline and (self.config.api_url or self.config.gateway_url):
            from wisp.plugins.discord.endpoints import endpoints

            self._exits.enter_context(endpoints(self.config.api_url, self.config.gateway_url))
            logger.info(
                "Discord REST at {}, gateway at {}",
                self.config.api_url or "Discord",
                self.config.gateway_url or "Discord",
            )
        self.roots = frozenset(name.split(" ")[0] for name in self.app.commands)
        payload = commands_payload(self.app.commands.values())  # bad names fail here
        self.bot = bot = self.build()
        try:
            await bot.login(token)
        except discord.LoginFailure:
            await bot.close()
            self._exits.close()
            raise wisp.ExternalServiceError(
                detail="Discord refused the token ([discord] token or DISCORD_TOKEN)"
            ) from None
        if not self.gateway:
            # Interactions arrive over HTTP; REST (answers, follow-ups) is all we need.
            assert bot.user is not None
            self.router.bot_user_id = bot.user.id
            logger.info("logged in to Discord as {} (REST only, no gateway)", bot.user)
            await super().start()
            return
        ready = asyncio.Event()
        bot.add_listener(_set_on_ready(ready), "on_ready")
        self._task = asyncio.create_task(bot.connect(reconnect=not self.offline))
        waiter = asyncio.create_task(ready.wait())
        limit = self.ready_timeout()
        done, _ = await asyncio.wait(
            {self._task, waiter}, timeout=limit, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            waiter.cancel()
            error = self._task.exception() if self._task in done else None
            await self.stop()
            if error is None:
                raise wisp.ExternalServiceError(
                    detail=f"Discord did not get ready within {limit:g}s "
                    "(raise [discord] ready_timeout when many shards queue to identify)"
                )
            raise wisp.ExternalServiceError(detail=f"Discord did not get ready: {error!r}")
        assert bot.user is not None
        self.router.bot_user_id = bot.user.id
        logger.info("connected to Discord as {} ({} guilds)", bot.user, len(bot.guilds))
        await self.sync(payload)
        await super().start()

    def ready_timeout(self) -> float:
        """``[discord] ready_timeout``, else 60 s plus 6 s per shard this process runs."""
        if self.config.ready_timeout is not None:
            return self.config.ready_timeout
        bot: Any = self.bot
        ids = getattr(bot, "shard_ids", None)
        shards = len(ids) if ids else getattr(bot, "shard_count", None) or 1
        return 60.0 + 6.0 * shards

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.close()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
        self._task = None
        self._exits.close()
        await super().stop()

    async def health(self) -> wisp.Health:
        bot = self.bot
        if not self.gateway and bot is not None and not bot.is_closed() and bot.user:
            return wisp.Health(True, f"logged in as {bot.user} (REST only)")
        if bot is None or bot.is_closed() or not bot.is_ready():
            return wisp.Health(False, "not connected")
        return wisp.Health(
            True,
            f"connected as {bot.user}, {len(bot.guilds)} guilds, "
            f"latency {bot.latency * 1000:.0f}ms",
        )

    # -- command sync -----------------------------------------------------------

    def _hash_file(self, scope: str) -> Path:
        assert self.bot is not None
        assert self.bot.application_id is not None
        return self.app.rootdir / ".wisp" / f"discord-commands-{self.bot.application_id}-{scope}"

    def command_payload(self) -> list[dict[str, Any]]:
        """Wisp's commands, plus any registered on discord.py's own tree (legacy modules)."""
        payload = commands_payload(self.app.commands.values())
        if self.bot is not None:
            ours = {c["name"] for c in payload}
            for command in self.bot.tree.get_commands():
                if command.name in ours:
                    raise wisp.PluginError(
                        f"slash command {command.name!r} is defined by Wisp and on discord.py's "
                        "tree; rename one"
                    )
                payload.append(command.to_dict(self.bot.tree))
        return payload

    async def sync(
        self,
        payload: list[dict[str, Any]] | None = None,
        *,
        force: bool = False,
        guild_id: int | None = None,
    ) -> bool:
        """Upload the command set unless it is unchanged since the last sync here."""
        assert self.bot is not None
        assert self.bot.application_id is not None
        payload = payload if payload is not None else self.command_payload()
        guild_id = guild_id if guild_id is not None else self.config.sync_guild
        scope = f"guild-{guild_id}" if guild_id else "global"
        digest = payload_hash(payload)
        marker = self._hash_file(scope)
        if (
            not force
            and not self.offline
            and marker.exists()
            and marker.read_text().strip() == digest
        ):
            logger.debug("slash commands unchanged ({}); not syncing", scope)
            return False
        http = self.bot.http
        app_id = self.bot.application_id
        if guild_id:
            await http.bulk_upsert_guild_commands(app_id, guild_id, payload)
        else:
            await http.bulk_upsert_global_commands(app_id, payload)
        self.synced = payload
        if not self.offline:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(digest + "\n")
        logger.info("synced {} slash command(s) ({})", len(payload), scope)
        return True

    # -- slash commands -----------------------------------------------------------

    def _mark_handled(self, item_id: int) -> None:
        self._handled[item_id] = None
        if len(self._handled) > 10_000:
            self._handled.popitem(last=False)
        waiter = self._waiters.pop(item_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_handled(self, item_id: int, timeout: float = 10.0) -> None:
        """Wait until the message or interaction ``item_id`` has been fully handled."""
        if item_id in self._handled:
            return
        waiter = self._waiters.setdefault(item_id, asyncio.get_running_loop().create_future())
        async with asyncio.timeout(timeout):
            await waiter

    async def _admitted(self, event: str, args: tuple[Any, ...]) -> bool:
        for gate in self.gates:
            if not await gate(event, args):
                return False
        return True

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        try:
            if self.gates and not await self._admitted("interaction", (interaction,)):
                return
            await self._interaction(interaction)
        except Exception:
            # discord.py would report it to stdlib logging, where nobody looks.
            logger.exception("handling interaction {} failed", interaction.id)
        finally:
            self._mark_handled(interaction.id)

    async def _interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type not in (
            discord.InteractionType.application_command,
            discord.InteractionType.autocomplete,
        ):
            return
        data: Any = interaction.data or {}
        name, raw, focused = read_invocation(data)
        command = self.app.commands.get(name)
        if command is None:
            return
        ids = {
            "guild_id": interaction.guild_id,
            "channel_id": interaction.channel_id,
            "user_id": interaction.user.id,
        }
        if interaction.type is discord.InteractionType.autocomplete:
            await self._autocomplete(interaction, command, raw, focused, ids)
            return
        quiet = bool(command.metadata.get("ephemeral", False))
        deferral = asyncio.create_task(self._defer_later(interaction, quiet))
        try:
            outcome = await self.app.call(
                name, raw, invocation_type=InvocationType.SLASH, raw=interaction, **ids
            )
        finally:
            deferral.cancel()
        await self._notify("slash", interaction, outcome)
        if outcome.response is None and not interaction.response.is_done():
            logger.warning(
                "slash command {!r} returned nothing and did not respond itself; Discord will "
                "show 'The application did not respond'",
                name,
            )
        await self._reply_interaction(interaction, outcome.response)

    async def _defer_later(self, interaction: discord.Interaction, ephemeral: bool) -> None:
        """Past ``defer_after``, tell Discord we are thinking (commands whose
        metadata says ``ephemeral=True`` think privately)."""
        await asyncio.sleep(self.config.defer_after)
        if not interaction.response.is_done():
            await interaction.response.defer(thinking=True, ephemeral=ephemeral)
            interaction.extras["wisp_deferred_publicly"] = not ephemeral

    async def _autocomplete(
        self,
        interaction: discord.Interaction,
        command: wisp.Command,
        raw: dict[str, Any],
        focused: str | None,
        ids: dict[str, Any],
    ) -> None:
        param = command.param(focused) if focused else None
        if param is None or param.autocomplete is None:
            return
        ctx = await self.app.make_context(
            InvocationType.SLASH,
            command.name,
            target=command,
            options=dict(raw),
            raw=interaction,
            **ids,
        )
        try:
            found = await param.autocomplete(ctx, str(raw.get(param.name) or ""))
        except Exception:
            ctx.logger.exception("autocomplete for {}.{} failed", command.name, param.name)
            found = []
        choices = [c if isinstance(c, Choice) else Choice(str(c), str(c)) for c in found][:25]
        await interaction.response.autocomplete(
            [app_commands.Choice(name=c.name, value=c.value) for c in choices]
        )

    async def _reply_interaction(
        self, interaction: discord.Interaction, response: Response | None
    ) -> None:
        if response is None:
            return
        kwargs = _message_kwargs(response)
        if interaction.response.is_done():
            if response.ephemeral and interaction.extras.get("wisp_deferred_publicly"):
                # The first followup would replace the public "thinking..."
                # message: remove it, so the private answer stays private.
                await interaction.delete_original_response()
            await interaction.followup.send(ephemeral=response.ephemeral, **kwargs)
        else:
            await interaction.response.send_message(ephemeral=response.ephemeral, **kwargs)

    # -- prefix commands and message events ---------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        try:
            if self.gates and not await self._admitted("message", (message,)):
                return
            await self._message(message)
        except Exception:
            logger.exception("handling message {} failed", message.id)
        finally:
            self._mark_handled(message.id)

    async def _message(self, message: discord.Message) -> None:
        if (
            self.bot is not None
            and self.bot.user is not None
            and message.author.id == self.bot.user.id
        ):
            return  # never react to our own messages
        prefix = self.config.prefix
        if prefix and message.content.startswith(prefix) and not message.author.bot:
            handled = await self._prefix_command(message, message.content[len(prefix) :])
            if handled:
                return
        outcomes = await self.router.route(
            "message",
            {"message": message},
            raw=message,
            guild_id=message.guild.id if message.guild else None,
            channel_id=message.channel.id,
            actor=message.author,
            fingerprint=("message", message.channel.id, message.author.id, message.content),
        )
        for outcome in outcomes:
            await self._notify("event", message, outcome)

    async def _prefix_command(self, message: discord.Message, text: str) -> bool:
        try:
            words = shlex.split(text)
        except ValueError:
            words = text.split()  # a lone apostrophe ("don't") is not a quoting error
        for n in (3, 2, 1):
            name = " ".join(words[:n])
            if len(words) >= n and name in self.app.commands:
                break
        else:
            return False
        command = self.app.commands[name]
        raw, extra = prefix_arguments(command, words[n:])
        if extra is not None:
            await message.channel.send(f"`{name}` takes no more arguments (got `{extra}`).")
            return True
        outcome = await self.app.call(
            name,
            raw,
            invocation_type=InvocationType.PREFIX,
            raw=message,
            guild_id=message.guild.id if message.guild else None,
            channel_id=message.channel.id,
            user_id=message.author.id,
        )
        await self._notify("prefix", message, outcome)
        if outcome.response is not None:
            await message.channel.send(**_message_kwargs(outcome.response))
        return True

    # -- events -----------------------------------------------------------------

    def _router_for(
        self, event: str, shape: Callable[..., tuple[dict[str, Any], Any, Any, Any]]
    ) -> Callable[..., Coroutine[Any, Any, None]]:
        async def listener(*args: Any) -> None:
            if self.gates and not await self._admitted(event, args):
                return
            payload, guild, actor, fingerprint = shape(*args)
            channel = getattr(args[-1], "channel", None) or getattr(
                getattr(args[0], "message", None), "channel", None
            )
            try:
                outcomes = await self.router.route(
                    event,
                    payload,
                    guild_id=guild.id if guild is not None else None,
                    channel_id=getattr(channel, "id", None),
                    actor=actor,
                    fingerprint=fingerprint,
                    raw=args[-1],
                )
                for outcome in outcomes:
                    await self._notify("event", args[-1], outcome)
            except Exception:
                logger.exception("routing the {} event failed", event)

        listener.__name__ = f"wisp_{event}"
        return listener

    async def _notify(self, kind: str, raw: Any, outcome: Outcome) -> None:
        for listener in self.listeners:
            result = listener(kind, raw, outcome)
            if asyncio.iscoroutine(result):
                await result


def prefix_arguments(command: wisp.Command, words: list[str]) -> tuple[dict[str, Any], str | None]:
    """Map prefix-command words to options: ``key=value`` by name, the rest in order.

    Returns the options and the first word left over, if any.
    """
    raw: dict[str, Any] = {}
    pending: list[str] = []
    for word in words:
        key, sep, value = word.partition("=")
        if sep and command.param(key) is not None:
            raw[key] = value
        else:
            pending.append(word)
    free = [p.name for p in command.params if p.name not in raw]
    for word in pending:
        if not free:
            return raw, word
        raw[free.pop(0)] = word
    for p in command.params:
        if p.type in _MENTIONABLE and isinstance(raw.get(p.name), str):
            raw[p.name] = _MENTION.sub(r"\1", raw[p.name])
    return raw, None


#: ``<@123>``, ``<@!123>``, ``<#123>``, ``<@&123>``: the id inside.
_MENTION = re.compile(r"^<(?:@!?|#|@&)(\d+)>$")
_MENTIONABLE = frozenset({ParamType.USER, ParamType.CHANNEL, ParamType.ROLE, ParamType.MENTIONABLE})


class _ToLoguru(logging.Handler):
    """discord.py logs through stdlib logging; show its records with Wisp's."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().endswith("voice will NOT be supported"):
            return  # Wisp does not do voice: not worth a warning on every start
        level: str | int
        try:
            level = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info, depth=6).log(
            level, "discord.py: {}", record.getMessage()
        )


def _route_discord_logging() -> None:
    log = logging.getLogger("discord")
    if not any(isinstance(h, _ToLoguru) for h in log.handlers):
        log.addHandler(_ToLoguru())
        if log.level == logging.NOTSET:  # [logging] levels may have set one
            log.setLevel(logging.INFO)
        log.propagate = False


def _set_on_ready(event: asyncio.Event) -> Callable[[], Coroutine[Any, Any, None]]:
    async def on_ready() -> None:
        event.set()

    return on_ready


def _message_kwargs(response: Response) -> dict[str, Any]:
    out: dict[str, Any] = {"content": response.content}
    if response.embed is not None:
        out["embed"] = response.embed
    if response.view is not None:
        out["view"] = response.view
    return out


def _member_guild(member: Any) -> Any:
    return getattr(member, "guild", None)


#: discord.py event -> (Wisp event, (args) -> (payload, guild, actor, fingerprint)).
#: The fingerprint says "the same event again" for loop detection; None: never a loop.
EVENTS: dict[str, tuple[str, Callable[..., tuple[dict[str, Any], Any, Any, Any]]]] = {
    "on_message_edit": (
        "message_edit",
        lambda before, after: (
            {"before": before, "after": after},
            after.guild,
            after.author,
            ("edit", after.channel.id, after.author.id, after.content),
        ),
    ),
    "on_message_delete": (
        "message_delete",
        lambda message: ({"message": message}, message.guild, message.author, None),
    ),
    "on_member_join": (
        "member_join",
        lambda member: ({"member": member}, member.guild, member, None),
    ),
    "on_member_remove": (
        "member_remove",
        lambda member: ({"member": member}, member.guild, member, None),
    ),
    "on_member_update": (
        "member_update",
        lambda before, after: ({"before": before, "after": after}, after.guild, after, None),
    ),
    "on_reaction_add": (
        "reaction_add",
        lambda reaction, user: (
            {"reaction": reaction, "user": user},
            reaction.message.guild,
            user,
            ("reaction_add", reaction.message.id, str(reaction.emoji), user.id),
        ),
    ),
    "on_reaction_remove": (
        "reaction_remove",
        lambda reaction, user: (
            {"reaction": reaction, "user": user},
            reaction.message.guild,
            user,
            ("reaction_remove", reaction.message.id, str(reaction.emoji), user.id),
        ),
    ),
    "on_guild_join": ("guild_join", lambda guild: ({"guild": guild}, guild, None, None)),
    "on_guild_remove": ("guild_remove", lambda guild: ({"guild": guild}, guild, None, None)),
    "on_guild_update": (
        "guild_update",
        lambda before, after: ({"before": before, "after": after}, after, None, None),
    ),
}
