"""The offline driver: the real bot against a local fake Discord, no token needed.

:class:`OfflineDriver` starts a :class:`~wisp.plugins.discord.fake.FakeDiscord`,
points discord.py at it and starts the application with its Discord service,
then plays console lines: ``/name key=value`` runs a slash command, anything
else is a message in ``#general`` (so ``!ping`` is a prefix command), and a
leading ``@ID`` speaks as another member, and ``~wait SECONDS`` lets time pass
showing what the bot sent meanwhile (a job firing).  ``wisp run --offline`` is a console
over it; ``--script FILE`` replays a file; the pytest fixtures use it too.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from loguru import logger

import wisp
from wisp.errors import WispError
from wisp.plugins.discord import enable
from wisp.plugins.discord.bot import DiscordService
from wisp.plugins.discord.fake import (
    DEFAULT_GUILD_ID,
    DEFAULT_OWNER_ID,
    FakeDiscord,
    FakeGuild,
    FakeMember,
    FakeUser,
    RecordedCall,
    patched_endpoints,
)
from wisp.responses import Outcome

__all__ = ["Exchange", "OfflineDriver", "offline_guild", "run_console"]

EPHEMERAL = 64
# Clear of the fake's own fixture ids (bot, owner, guild, channel).
ALICE = FakeUser(id=DEFAULT_OWNER_ID + 100, username="alice")
BOB = FakeUser(id=DEFAULT_OWNER_ID + 101, username="bob")


def offline_guild() -> FakeGuild:
    """The console's guild: the owner, ``alice`` and ``bob``, and ``#general``."""
    guild = FakeGuild()
    guild.members.extend([FakeMember(ALICE), FakeMember(BOB)])
    return guild


@attrs.define
class Exchange:
    """One console line and what came of it."""

    line: str
    replies: list[str] = attrs.Factory(list)
    outcomes: list[Outcome] = attrs.Factory(list)
    error: str | None = None

    @property
    def failed(self) -> bool:
        """An internal error, a missing answer or a bad line (not a user error)."""
        if self.error is not None:
            return True
        return any(
            o.error is not None and not isinstance(o.error, WispError) for o in self.outcomes
        )


def _reply_text(call: RecordedCall) -> str | None:
    body: Any = call.json or {}
    if "/callback" in call.path:
        body = body.get("data") or {}
        if call.json and call.json.get("type") == 5:
            return "(thinking...)"
    if not isinstance(body, dict):
        return None
    text = body.get("content") or ""
    for embed in body.get("embeds") or []:
        title = embed.get("title") or embed.get("description") or "embed"
        text += f" [embed: {title}]"
    if not text:
        return None
    flags = int(body.get("flags") or 0)
    return f"{text} (ephemeral)" if flags & EPHEMERAL else text


def _is_reply(call: RecordedCall) -> bool:
    if call.status != 200:
        return False
    if call.method == "POST" and (call.path.endswith("/messages") or "/callback" in call.path):
        return True
    if call.path.startswith("/webhooks/"):
        return call.method in ("POST", "PATCH")
    return False


class OfflineDriver:
    """Runs an application's bot against a fake Discord and talks to it."""

    def __init__(
        self, app: wisp.Wisp, fake: FakeDiscord | None = None, timeout: float = 10.0
    ) -> None:
        self.app = app
        self.fake = fake or FakeDiscord([offline_guild()])
        self.timeout = timeout
        self.service: DiscordService | None = None
        self._patch: Any = None
        self._outcomes: list[Outcome] = []

    async def __aenter__(self) -> OfflineDriver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self.fake.start()
        self._patch = patched_endpoints(self.fake)
        self._patch.__enter__()
        try:
            self.app.configure()
            self.service = enable(self.app, offline=True)
            self.service.listeners.append(self._record)
            await self.app.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        try:
            await self.app.stop()
        finally:
            if self._patch is not None:
                self._patch.__exit__(None, None, None)
                self._patch = None
            await self.fake.stop()

    def _record(self, kind: str, raw: Any, outcome: Outcome) -> None:
        self._outcomes.append(outcome)

    # -- talking to the bot -------------------------------------------------------

    async def slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: int | None = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
    ) -> Exchange:
        """Run slash command ``name`` and collect the bot's answer."""
        assert self.service is not None
        mark, seen = self.fake.mark(), len(self._outcomes)
        interaction = await self.fake.interaction_create(
            name, options or {}, user=user, guild_id=guild_id, channel_id=channel_id
        )
        exchange = Exchange(f"/{name}")
        try:
            await self.service.wait_handled(interaction.id, self.timeout)
            if name.split(" ")[0] not in self.service.roots:
                # discord.py's own tree (a legacy module) answers in a task of its own.
                await self.fake.wait_for_interaction_response(interaction.id, timeout=self.timeout)
        except TimeoutError:
            exchange.error = f"the bot did not answer /{name} within {self.timeout}s"
        return self._collect(exchange, mark, seen)

    async def say(
        self,
        content: str,
        *,
        user: int | None = None,
        channel_id: int | None = None,
        guild_id: int | None = None,
    ) -> Exchange:
        """Post a message (``!ping`` is a prefix command) and collect the answers."""
        assert self.service is not None
        mark, seen = self.fake.mark(), len(self._outcomes)
        message_id = await self.fake.message_create(
            guild_id=guild_id, channel_id=channel_id, author=user, content=content
        )
        exchange = Exchange(content)
        try:
            await self.service.wait_handled(message_id, self.timeout)
            await self._settle()
        except TimeoutError:
            exchange.error = f"the bot did not see the message within {self.timeout}s"
        return self._collect(exchange, mark, seen)

    async def _settle(self, quiet: float = 0.05, limit: float = 1.0) -> None:
        """Let listeners outside Wisp (legacy modules, cogs) finish their sends:
        wait until the fake has seen no REST call for ``quiet`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        count = -1
        while count != len(self.fake.calls) and loop.time() < deadline:
            count = len(self.fake.calls)
            await asyncio.sleep(quiet)

    def _collect(self, exchange: Exchange, mark: int, seen: int) -> Exchange:
        exchange.outcomes = self._outcomes[seen:]
        for call in self.fake.calls[mark:]:
            if _is_reply(call) and (text := _reply_text(call)) is not None:
                exchange.replies.append(text)
        return exchange

    async def wait(self, seconds: float) -> Exchange:
        """Let ``seconds`` pass; collect what the bot sent meanwhile, unasked (jobs firing)."""
        mark, seen = self.fake.mark(), len(self._outcomes)
        await asyncio.sleep(seconds)
        return self._collect(Exchange(f"~wait {seconds:g}"), mark, seen)

    def _tree_commands(self) -> set[str]:
        bot = self.service.bot if self.service is not None else None
        return {c.name for c in bot.tree.get_commands()} if bot is not None else set()

    def member_id(self, who: str) -> int | None:
        """A member of the console's guild by name or id."""
        for member in self.fake.default_guild.members:
            if who in (member.user.username, str(member.user.id)):
                return member.user.id
        return None

    async def play(self, line: str) -> Exchange | None:
        """One console line; ``None`` for blank lines and comments."""
        line = original = line.strip()
        if not line or line.startswith("#"):
            return None
        if line.startswith("~"):
            word, _, arg = line[1:].partition(" ")
            try:
                seconds = float(arg)
            except ValueError:
                seconds = -1.0
            if word != "wait" or not 0 <= seconds <= 3600:
                return Exchange(line, error="the only ~ line is `~wait SECONDS` (0 to 3600)")
            return await self.wait(seconds)
        user = None
        if line.startswith("@"):
            who, _, line = line.partition(" ")
            user = self.member_id(who[1:])
            if user is None:
                names = ", ".join(f"@{m.user.username}" for m in self.fake.default_guild.members)
                return Exchange(f"{who} {line}", error=f"no member {who} (try {names})")
        if not line.startswith("/"):
            exchange = await self.say(line, user=user)
            exchange.line = original
            return exchange
        try:
            words = shlex.split(line[1:])
        except ValueError as exc:
            return Exchange(line, error=f"cannot read the line: {exc}")
        tree = self._tree_commands()
        for n in (3, 2, 1):
            if len(words) >= n and (
                " ".join(words[:n]) in self.app.commands or (n == 1 and words[0] in tree)
            ):
                break
        else:
            known = ", ".join(f"/{c}" for c in sorted({*self.app.commands, *tree}))
            return Exchange(line, error=f"no command {words[0] if words else ''!r}; known: {known}")
        options: dict[str, Any] = {}
        for word in words[n:]:
            key, sep, value = word.partition("=")
            if not sep:
                return Exchange(line, error=f"option {word!r} is not key=value")
            command = self.app.commands.get(" ".join(words[:n]))
            options[key] = _typed(command, key, value) if command is not None else value
        exchange = await self.slash(" ".join(words[:n]), options, user=user)
        exchange.line = original
        return exchange


def _typed(command: wisp.Command, key: str, value: str) -> Any:
    """Console values are text; send them as Discord would type them."""
    param = command.param(key)
    if param is None:
        return value
    try:
        return param.convert(value)
    except Exception:
        return value  # let the bot's own validation answer


def render(exchange: Exchange) -> list[str]:
    lines = [f"> {exchange.line}"]
    lines += [f"bot: {r}" for r in exchange.replies]
    if exchange.error:
        lines.append(f"!! {exchange.error}")
    elif not exchange.replies:
        lines.append("(no reply)")
    for o in exchange.outcomes:
        if o.error is not None and not isinstance(o.error, WispError):
            lines.append(f"!! internal error {type(o.error).__name__} (request {o.request_id})")
    return lines


async def run_console(
    app: wisp.Wisp, *, script: str | None = None, out: Callable[[str], None] = print
) -> int:
    """``wisp run --offline``: a console, or a replayed script; exit 1 on any error."""
    lines: list[str] | None = None
    if script is not None:
        try:
            text = await asyncio.to_thread(Path(script).read_text, encoding="utf-8")
            lines = text.splitlines()
        except OSError as exc:
            print(f"wisp run: cannot read script {script}: {exc.strerror}", file=sys.stderr)
            return 2
    failed = 0
    scripted = lines is not None
    async with OfflineDriver(app) as driver:
        guild = driver.fake.default_guild
        if lines is None:
            out(
                f"offline Discord: guild {guild.name!r} ({guild.id}), #general; you are its "
                "owner, and a line starting @alice or @bob speaks as them."
            )
            out("type /command key=value, !prefix commands or plain messages; Ctrl+D quits")
        while True:
            if lines is not None:
                if not lines:
                    break
                line = lines.pop(0)
            else:
                line = await asyncio.to_thread(sys.stdin.readline)
                if not line:
                    break
            exchange = await driver.play(line)
            if exchange is None:
                continue
            failed += exchange.failed
            for text in render(exchange):
                out(text)
    if failed:
        logger.error("{} line(s) failed", failed)
    # A script is a check: any failed line fails it.  At the console, you saw it.
    return 1 if failed and scripted else 0


__all__ += ["DEFAULT_GUILD_ID", "render"]
