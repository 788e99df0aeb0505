"""A Wisp 1.x module runs unchanged through the ``modules`` adapter plugin."""

from __future__ import annotations

import pytest

import wisp

pytestmark = pytest.mark.needs_plugin("modules")

LEGACY = """
from typing import Any, Set

import discord
from discord import app_commands
from discord.ext import commands

from wisp.plugins.modules import Module


EVENTS = []


class Base(Module):
    @property
    def name(self) -> str:
        return "base"

    async def setup(self, bot: Any, ctx: Any) -> None:
        EVENTS.append("setup base")


class Greeter(Module):
    @property
    def name(self) -> str:
        return "greeter"

    @property
    def depends_on(self) -> list:
        return ["base"]

    @property
    def required_services(self) -> Set[str]:
        return {"guild_data"}

    async def setup(self, bot: Any, ctx: Any) -> None:
        EVENTS.append("setup greeter")
        data = ctx.guild_data

        @app_commands.command(name="greet", description="Say hello the 1.x way.")
        async def greet(interaction: discord.Interaction, who: str) -> None:
            count = (await data.get(interaction.guild_id, "count", 0)) + 1
            await data.set(interaction.guild_id, "count", count)
            await interaction.response.send_message(f"hello {who} (#{count})")

        bot.tree.add_command(greet)

        async def on_message(message: discord.Message) -> None:
            if message.content == "legacy?":
                await message.channel.send("still here")

        bot.add_listener(on_message, "on_message")

        @commands.command(name="legacyping")
        async def legacyping(ctx: commands.Context) -> None:
            await ctx.send("legacy pong")

        bot.add_command(legacyping)

    async def teardown(self, bot: Any, ctx: Any) -> None:
        EVENTS.append("teardown greeter")


class NeedsRedis(Module):
    @property
    def name(self) -> str:
        return "cache_user"

    @property
    def required_services(self) -> Set[str]:
        return {"redis"}

    async def setup(self, bot: Any, ctx: Any) -> None:
        EVENTS.append("setup cache_user")
"""


@pytest.mark.needs_plugin("discord", "storage")
async def test_a_legacy_module_works_unchanged(wisp_project, wisp_offline, log_lines):
    wisp_project.write("legacy_bot.py", LEGACY)
    wisp_project.write("wisp.toml", '[modules]\nload = ["legacy_bot"]\n')
    app = wisp_project.app(plugins=["discord", "modules", "storage"])
    bot = await wisp_offline(app)
    import legacy_bot

    assert legacy_bot.EVENTS == ["setup base", "setup greeter"]
    assert any(
        "module 'cache_user' skipped: services redis unavailable" in r["message"] for r in log_lines
    )
    # its slash command was synced beside Wisp's, and answers through discord.py
    synced = bot.fake.calls_to("PUT", r"/applications/\d+/commands")[-1].json
    assert "greet" in {c["name"] for c in synced}
    answer = await bot.play("/greet who=ann")
    assert answer.replies == ["hello ann (#1)"]
    answer = await bot.play("/greet who=bo")
    assert answer.replies == ["hello bo (#2)"]
    answer = await bot.say("legacy?")
    assert answer.replies == ["still here"]
    # discord.py's own prefix commands (the bot's mention) run beside Wisp's router
    answer = await bot.say(f"<@{bot.fake.bot.id}> legacyping")
    assert answer.replies == ["legacy pong"]
    await bot.stop()
    assert legacy_bot.EVENTS[-1] == "teardown greeter"


def test_module_dependency_cycles_and_gaps_are_named() -> None:
    from wisp.plugins.modules import order

    class M:
        def __init__(self, name, deps=()):
            self.name = name
            self.depends_on = list(deps)

    ready, skipped = order([M("a", ["b"]), M("b"), M("c", ["missing"])])
    assert [m.name for m in ready] == ["b", "a"]
    assert skipped == ["module 'c' needs module(s) missing, which are not loaded"]
    with pytest.raises(wisp.PluginError, match="cycle"):
        order([M("a", ["b"]), M("b", ["a"])])
