"""Per-guild feature flags: a switched-off plugin's commands answer clearly, its
event handlers stay quiet, and the switch defaults to ``wisp_default_enabled``."""

from __future__ import annotations

import asyncio

import pytest

from wisp.cli.main import main

pytestmark = pytest.mark.needs_plugin("features")


def write_games(project, default_enabled: bool = True) -> None:
    project.write(
        "games_plugin.py",
        f"""
        import wisp
        from tests_helpers import HEARD

        wisp_default_enabled = {default_enabled}

        @wisp.command(description="Play.")
        async def play(ctx) -> str:
            return "playing"

        @wisp.event_handler("message")
        async def listen(ctx, message) -> None:
            HEARD.append(message.content)
    """,
    )
    project.write("tests_helpers.py", "HEARD = []\n")


@pytest.mark.needs_plugin("discord", "policy", "storage")
async def test_switching_a_plugin_off_per_guild(project, wisp_offline) -> None:
    write_games(project)
    project.write(
        "wisp.toml",
        '[wisp]\nplugins = ["storage", "policy", "features", "discord", "games_plugin"]\n',
    )
    app = project.app(autoload=None)
    bot = await wisp_offline(app)
    import tests_helpers

    assert (await bot.slash("play")).replies == ["playing"]
    alice = bot.member_id("alice")
    answer = await bot.slash("plugins disable", {"plugin": "games_plugin"}, user=alice)
    assert answer.replies[0].startswith("You need the `plugins.manage` capability")
    answer = await bot.slash("plugins disable", {"plugin": "games_plugin"})  # the owner
    assert answer.replies == ["`games_plugin` is now off in this server. (ephemeral)"]
    answer = await bot.slash("play")
    assert answer.replies == [
        "`/play` is switched off in this server (plugin `games_plugin`). (ephemeral)"
    ]
    await bot.say("anyone there?")
    assert tests_helpers.HEARD == []
    answer = await bot.slash("plugins list")
    assert "off games_plugin" in answer.replies[0]
    answer = await bot.slash("plugins disable", {"plugin": "policy"})
    assert "No plugin `policy`" in answer.replies[0]  # cannot lock the server out
    await bot.slash("plugins enable", {"plugin": "games_plugin"})
    assert (await bot.slash("play")).replies == ["playing"]
    await bot.say("back again")
    assert tests_helpers.HEARD == ["back again"]


@pytest.mark.needs_plugin("storage")
async def test_default_off_and_the_cli_switch(project, monkeypatch, capsys) -> None:
    write_games(project, default_enabled=False)
    project.write(
        "wisp.toml", '[wisp]\nautoload = false\nplugins = ["storage", "features", "games_plugin"]\n'
    )
    monkeypatch.chdir(project.root)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    code, _, err = await asyncio.to_thread(run, "call", "play", "--guild", "5")
    assert code == 1 and "switched off in this server" in err
    code, out, _ = await asyncio.to_thread(run, "plugins", "enable", "games_plugin", "--guild", "5")
    assert (code, out) == (0, "games_plugin is now on in guild 5\n")
    code, out, _ = await asyncio.to_thread(run, "call", "play", "--guild", "5")
    assert (code, out) == (0, "playing\n")
    code, _, err = await asyncio.to_thread(run, "call", "play", "--guild", "6")
    assert code == 1
    code, _, err = await asyncio.to_thread(run, "plugins", "disable", "nope", "--guild", "5")
    assert code == 2 and "No plugin `nope`" in err
    code, out, _ = await asyncio.to_thread(run, "plugins")
    assert code == 0 and "games_plugin" in out  # the listing still works


@pytest.mark.needs_plugin("policy", "discord")
async def test_blocking_storage_leaves_policy_and_features_loaded(
    project, wisp_offline, log_lines
) -> None:
    """Found by ``tests(without=storage)``: both plugins used to fail at start-up
    (`requires plugin 'storage'`), dropping every capability check with them."""
    write_games(project)
    app = project.app(plugins=["policy", "features", "discord", "games_plugin"], block=["storage"])
    bot = await wisp_offline(app)
    assert [f.name for f in app.pluginmanager.failures] == []
    warnings = [r["message"] for r in log_lines if r["level"] == "WARNING"]
    assert any(m.startswith("policy: rules are off") for m in warnings)
    assert any("features: per-guild plugin switches need the storage plugin" in m for m in warnings)
    assert (await bot.slash("play")).replies == ["playing"]  # no switches: every plugin on
    alice = bot.member_id("alice")
    answer = await bot.slash("plugins disable", {"plugin": "games_plugin"}, user=alice)
    assert answer.replies[0].startswith("You need the `plugins.manage` capability")
    answer = await bot.slash("plugins disable", {"plugin": "games_plugin"})  # the owner
    assert answer.replies == [
        "Plugins cannot be switched: per-guild plugin switches need the storage plugin, "
        "which is not loaded. (ephemeral)"
    ]
