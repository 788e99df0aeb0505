"""Collisions are start-up errors naming both sides: plugin names, commands,
config sections and ``wisp`` subcommands."""

from __future__ import annotations

import sys

import attrs
import pytest

import wisp
from wisp.cli.main import main

PLUGIN = """
import wisp

@wisp.hookimpl
def wisp_configure(app):
    pass
"""


def test_two_plugins_with_one_name(project, site) -> None:
    site("wisp-alpha", "1.0", {"greeter": "alpha_greeter"}, {"alpha_greeter": PLUGIN})
    site(
        "wisp-beta",
        "2.0",
        {"greeter": "beta_greeter"},
        {"beta_greeter": "raise RuntimeError('must never be imported')\n"},
    )
    app = project.app(autoload=True)
    with pytest.raises(wisp.PluginError) as info:
        app.configure()
    assert str(info.value) == (
        "plugin name 'greeter' is taken twice: by wisp-alpha 1.0, third-party, alpha_greeter "
        "and by wisp-beta 2.0, third-party, beta_greeter; uninstall or rename one of them"
    )
    assert "beta_greeter" not in sys.modules
    [failure] = [f for f in app.pluginmanager.failures if f.name == "greeter"]
    assert failure.stage == "collision" and failure.distribution == "wisp-beta"


def test_a_registered_object_taking_a_used_name(project) -> None:
    app = project.app()
    first = type("First", (), {"wisp_configure": wisp.hookimpl(lambda self: None)})()
    second = type("Second", (), {"wisp_configure": wisp.hookimpl(lambda self: None)})()
    assert app.register(first, "twin")
    assert not app.register(second, "twin")
    with pytest.raises(wisp.PluginError) as info:
        app.configure()
    assert str(info.value) == (
        "plugin name 'twin' is taken twice: by api and by api; uninstall or rename one of them"
    )


def test_two_commands_with_one_name(project) -> None:
    project.write("wisp.toml", '[wisp]\ncommand_paths = ["bot"]\n')
    for folder in ("fun", "games"):
        project.write(
            f"bot/{folder}/roll.py",
            """
            import wisp

            @wisp.command()
            async def roll(ctx) -> str:
                return "1"
            """,
        )
    with pytest.raises(wisp.PluginError) as info:
        project.app().configure()
    fun, games = project.root / "bot/fun/roll.py", project.root / "bot/games/roll.py"
    assert str(info.value) == (
        f"command 'roll' is defined twice: by plugin 'bot/fun/roll.py' ({fun}) and by "
        f"plugin 'bot/games/roll.py' ({games})"
    )


@attrs.frozen
class CacheConfig:
    size: int = 10


def test_two_config_sections_with_one_key(project) -> None:
    def declaring(cls_name: str) -> object:
        return type(
            cls_name,
            (),
            {"wisp_config_sections": wisp.hookimpl(lambda self: {"cache": CacheConfig})},
        )()

    app = project.app()
    app.register(declaring("A"), "fastcache")
    app.register(declaring("B"), "slowcache")
    with pytest.raises(wisp.ConfigError) as info:
        app.configure()
    # Implementations are called last-registered first: slowcache owns it.
    assert info.value.problems == [
        "[cache]: plugin 'fastcache' declares a section already owned by 'slowcache'"
    ]


@pytest.mark.needs_plugin("storage")
def test_two_wisp_subcommands_with_one_name(project, monkeypatch, capsys) -> None:
    project.write(
        "wisp.toml",
        '[wisp]\nautoload = false\nplugins = ["storage"]\n',
    )
    project.write(
        "wispconf.py",
        """
        import wisp

        @wisp.hookimpl
        def wisp_cli_commands():
            return [
                wisp.CliCommand("migrate", "mine", lambda app, args: 0),
                wisp.CliCommand("doctor", "mine too", lambda app, args: 0),
            ]
        """,
    )
    monkeypatch.chdir(project.root)
    assert main(["config"]) == 3
    err = capsys.readouterr().err
    assert (
        "wisp: command 'wisp doctor' is defined twice: by the kernel and by plugin "
        "'wispconf.py'\ncommand 'wisp migrate' is defined twice: by plugin 'wispconf.py' and "
        "by plugin 'storage'\n"
    ) in err
    assert main(["plugins"]) == 1
    assert "COLLISION: command 'wisp migrate' is defined twice" in capsys.readouterr().err
