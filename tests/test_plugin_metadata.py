"""Plugin records: compatibility, required plugins, intents, `wisp plugins --json`,
hook deprecation and `wisp data delete-user`."""

from __future__ import annotations

import asyncio
import json
import warnings

import pytest

import wisp
from wisp.cli.main import main
from wisp.metadata import PLUGIN_API_VERSION, PluginMetadata, read_metadata

NEEDS_V2 = """
import wisp

WISP_PLUGIN = wisp.PluginMetadata(name="future", api=">=2.0,<3")
calls = []

@wisp.hookimpl
def wisp_configure(app):
    calls.append("configure")
"""

GREETER = """
import wisp

WISP_PLUGIN = wisp.PluginMetadata(
    name="greeter",
    description="Says hello.",
    api=">=1.0,<2",
    intents=("guilds", "guild_messages"),
    commands=("hello",),
    data="Nothing.",
)

@wisp.command(description="hi")
async def hello(ctx) -> str:
    return "hi"
"""


def names(app: wisp.Wisp) -> list[str]:
    return [p.name for p in app.pluginmanager.plugins()]


def test_an_incompatible_plugin_is_not_registered_and_names_both_versions(project, site) -> None:
    root = site("wisp-future", "3.1", {"future": "future_plugin"}, {"future_plugin": NEEDS_V2})
    site("wisp-greeter", "1.0", {"greeter": "greeter_plugin"}, {"greeter_plugin": GREETER})
    app = project.app(plugins=["future", "greeter"]).configure()
    assert names(app) == ["greeter"], "the rest loads"
    [failure] = app.pluginmanager.failures
    assert failure.stage == "compatibility" and failure.status == "incompatible"
    assert failure.message == (
        f"plugin 'future' 3.1 supports Wisp plugin API >=2.0,<3, but wisp-framework "
        f"{wisp.__version__} provides plugin API {PLUGIN_API_VERSION}; it is not loaded"
    )
    assert failure.describe() == (
        f"plugin 'future' (wisp-future 3.1, -p) failed at compatibility: {failure.message}"
    )
    module = __import__("future_plugin")
    assert module.calls == [], "none of its hooks ran"
    assert (root / "future_plugin.py").exists()


@pytest.mark.needs_plugin("basics")
def test_a_distribution_requiring_another_framework_is_never_imported(project, site) -> None:
    root = site(
        "wisp-ancient",
        "0.3",
        {"ancient": "ancient_plugin"},
        {"ancient_plugin": "raise RuntimeError('must never be imported')\n"},
    )
    with (root / "wisp_ancient-0.3.dist-info" / "METADATA").open("a") as f:
        f.write("Requires-Dist: wisp-framework<0.0.1\nRequires-Dist: attrs\n")
    app = project.app(autoload=True).configure()
    [failure] = app.pluginmanager.failures
    assert (failure.name, failure.stage, failure.status) == (
        "ancient",
        "compatibility",
        "incompatible",
    )
    assert failure.message == (
        f"plugin 'ancient' 0.3 requires wisp-framework<0.0.1, but wisp-framework "
        f"{wisp.__version__} is installed; it is not loaded"
    )
    assert "basics" in names(app)


def test_a_bad_record_is_a_load_failure_naming_the_plugin(project, site) -> None:
    site(
        "wisp-bad",
        "1.0",
        {"bad": "bad_plugin", "typo": "typo_plugin"},
        {
            "bad_plugin": "WISP_PLUGIN = {'name': 'bad'}\n",
            "typo_plugin": "import wisp\nWISP_PLUGIN = wisp.PluginMetadata(name='t', api='1.0+')\n",
        },
    )
    app = project.app(plugins=["bad", "typo"]).bootstrap()
    failures = {f.name: f for f in app.pluginmanager.failures}
    assert failures["bad"].stage == "metadata"
    assert failures["bad"].message.startswith(
        "TypeError: WISP_PLUGIN is dict, not wisp.PluginMetadata"
    )
    assert failures["typo"].stage == "import"
    assert "PluginMetadata.api: '1.0+' is not a version range (e.g. '>=1.0,<2')" in (
        failures["typo"].message
    )


def test_record_fields_and_version_default_to_the_distribution(project, site) -> None:
    site("wisp-greeter", "1.4.2", {"greeter": "greeter_plugin"}, {"greeter_plugin": GREETER})
    app = project.app(plugins=["greeter"]).bootstrap()
    info = app.pluginmanager.info("greeter")
    assert info.metadata is not None and info.metadata.commands == ("hello",)
    assert info.plugin_version == "1.4.2"
    assert read_metadata(object()) is None
    meta = PluginMetadata(name="x", intents=["guilds"], requires="storage")
    assert meta.intents == ("guilds",) and meta.requires == ("storage",)
    assert meta.supports("1.0") and not PluginMetadata(name="x", api="<1").supports("1.0")


# -- required plugins ------------------------------------------------------------------


def test_required_plugins_missing_or_mismatching_are_one_start_up_error(project, site) -> None:
    site("wisp-greeter", "1.0", {"greeter": "greeter_plugin"}, {"greeter_plugin": GREETER})
    site("wisp-future", "3.1", {"future": "future_plugin"}, {"future_plugin": NEEDS_V2})
    toml = project.write(
        "wisp.toml",
        """
        [wisp]
        plugins = ["greeter", "future"]
        required_plugins = ["wisp-greeter>=1.2", "wisp-foo", "greeter<2", "future"]
        """,
    )
    app = project.app()
    with pytest.raises(wisp.PluginError) as info:
        app.configure()
    assert str(info.value) == (
        f"required plugins ([wisp] required_plugins in {toml}) are missing or do not match:\n"
        "  - 'wisp-greeter>=1.2', but plugin 'greeter' (wisp-greeter 1.0, wisp.toml, "
        "greeter_plugin) is version 1.0\n"
        "  - 'wisp-foo', which is not installed or not loaded\n"
        "  - 'future', which failed to load"
    )


def test_required_plugins_that_are_met_start(project, site) -> None:
    site("wisp-greeter", "1.4", {"greeter": "greeter_plugin"}, {"greeter_plugin": GREETER})
    project.write(
        "wisp.toml",
        '[wisp]\nplugins = ["greeter"]\nrequired_plugins = ["wisp-greeter>=1.2,<2", "greeter"]\n',
    )
    app = project.app().configure()
    assert "hello" in app.commands


def test_a_bad_required_plugins_entry_is_a_config_error(project) -> None:
    project.write("wisp.toml", '[wisp]\nrequired_plugins = ["wisp foo >> 1"]\n')
    with pytest.raises(wisp.ConfigError, match=r"wisp\.required_plugins: 'wisp foo >> 1' is not"):
        project.app().configure()


def test_doctor_reports_required_plugins_and_intents(project, site, capsys, monkeypatch) -> None:
    site("wisp-greeter", "1.0", {"greeter": "greeter_plugin"}, {"greeter_plugin": GREETER})
    project.write(
        "wisp.toml",
        '[wisp]\nautoload = false\nplugins = ["greeter"]\nrequired_plugins = ["wisp-foo>=1"]\n',
    )
    monkeypatch.chdir(project.root)
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert (
        f"required plugins: FAIL required plugins ([wisp] required_plugins in "
        f"{project.root / 'wisp.toml'}) are missing or do not match:\n"
        "  - 'wisp-foo>=1', which is not installed or not loaded\n"
    ) in out
    assert "gateway intents:\n  guild_messages: greeter\n  guilds: greeter\n" in out


def test_record_requires_with_a_version_range(project, site) -> None:
    site(
        "wisp-needy",
        "1.0",
        {"needy": "needy_plugin", "greeter": "greeter_plugin"},
        {
            "needy_plugin": "import wisp\n"
            "WISP_PLUGIN = wisp.PluginMetadata(name='needy', requires=['greeter>=2'])\n",
            "greeter_plugin": GREETER,
        },
    )
    app = project.app(plugins=["greeter", "needy"]).bootstrap()
    [failure] = app.pluginmanager.failures
    assert failure.message == (
        "plugin 'needy' requires plugin 'greeter>=2', but plugin 'greeter' "
        "(wisp-needy 1.0, -p, greeter_plugin) is version 1.0"
    )


# -- intents ---------------------------------------------------------------------------


def test_intents_are_the_union_of_enabled_plugins(project, site) -> None:
    site(
        "wisp-more",
        "1.0",
        {"greeter": "greeter_plugin", "watcher": "watcher_plugin"},
        {
            "greeter_plugin": GREETER,
            "watcher_plugin": "import wisp\n"
            "WISP_PLUGIN = wisp.PluginMetadata(name='watcher', intents=['guilds', 'members'])\n",
        },
    )
    app = project.app(plugins=["greeter", "watcher"]).bootstrap()
    assert app.pluginmanager.intents() == {
        "guild_messages": ["greeter"],
        "guilds": ["greeter", "watcher"],
        "members": ["watcher"],
    }
    blocked = project.app(plugins=["greeter", "watcher"], block=["watcher"]).bootstrap()
    assert blocked.pluginmanager.intents() == {"guild_messages": ["greeter"], "guilds": ["greeter"]}


@pytest.mark.needs_plugin("discord")
def test_the_discord_bot_asks_for_the_union(project, site) -> None:
    from wisp.plugins.discord import enable

    site(
        "wisp-watch",
        "1.0",
        {"watcher": "watcher_plugin"},
        {
            "watcher_plugin": "import wisp\n"
            "WISP_PLUGIN = wisp.PluginMetadata(name='watcher', intents=['presences'])\n",
        },
    )
    project.write("wisp.toml", '[discord]\nintents = ["dm_typing"]\n')
    app = project.app(plugins=["discord", "watcher"]).configure()
    intents = enable(app, offline=True).intents()
    assert intents.presences and intents.dm_typing and intents.guilds
    assert not intents.voice_states


@pytest.mark.needs_plugin("discord")
def test_an_unknown_declared_intent_names_the_plugin(project, site) -> None:
    site(
        "wisp-watch",
        "1.0",
        {"watcher": "watcher_plugin"},
        {
            "watcher_plugin": "import wisp\n"
            "WISP_PLUGIN = wisp.PluginMetadata(name='watcher', intents=['presence'])\n",
        },
    )
    with pytest.raises(wisp.PluginError) as info:
        project.app(plugins=["discord", "watcher"]).configure()
    assert "plugin 'watcher' declares the unknown gateway intent 'presence'; known: guilds," in str(
        info.value
    )


# -- wisp plugins --json -----------------------------------------------------------------


@pytest.mark.needs_plugin("accesslog", "basics")
def test_plugins_json_lists_every_status(project, site, capsys, monkeypatch) -> None:
    site("wisp-greeter", "1.0", {"greeter": "greeter_plugin"}, {"greeter_plugin": GREETER})
    site("wisp-future", "3.1", {"future": "future_plugin"}, {"future_plugin": NEEDS_V2})
    site("wisp-broken", "0.1", {"broken": "broken_plugin"}, {"broken_plugin": "raise OSError('x')"})
    monkeypatch.chdir(project.root)
    assert main(["-p", "no:accesslog", "plugins", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["plugin_api"] == PLUGIN_API_VERSION and report["wisp"] == wisp.__version__
    rows = {r["name"]: r for r in report["plugins"]}
    greeter = rows["greeter"]
    assert greeter["status"] == "loaded" and greeter["distribution"] == "wisp-greeter"
    assert greeter["version"] == "1.0" and greeter["origin"] == "third-party"
    assert greeter["hooks"] == [] and greeter["metadata"]["intents"] == ["guilds", "guild_messages"]
    assert isinstance(greeter["import_ms"], float) and greeter["import_ms"] >= 0
    assert rows["basics"]["status"] == "loaded" and rows["basics"]["origin"] == "bundled"
    assert "wisp_commands" in rows["basics"]["hooks"] or rows["basics"]["hooks"] == []
    assert rows["accesslog"]["status"] == "blocked"
    assert rows["accesslog"]["cause"] == "-p no:accesslog"
    assert rows["accesslog"]["distribution"] == "wisp-framework"
    assert rows["future"]["status"] == "incompatible"
    assert rows["future"]["cause"].startswith("compatibility: plugin 'future' 3.1 supports")
    assert rows["broken"]["status"] == "broken"
    assert rows["broken"]["cause"].startswith("import: entry point 'broken_plugin': OSError: x")


# -- hook deprecation --------------------------------------------------------------------


class Specs:
    @wisp.hookspec(
        warn_on_impl=wisp.hook_deprecated(
            "implement wisp_greet_v2(app, name) instead", since="0.2", removal="1.0"
        )
    )
    def wisp_greet(self, app):
        """Old greeting hook."""

    @wisp.hookspec(
        warn_on_impl_args={
            "loud": wisp.hook_deprecated(
                "read ctx.options['volume'] instead", since="0.2", removal="1.0"
            )
        }
    )
    def wisp_greet_v2(self, app, name, loud):
        """New greeting hook."""


class Provider:
    @wisp.hookimpl
    def wisp_addhooks(self, pluginmanager):
        pluginmanager.add_hookspecs(Specs)


def test_a_deprecated_hook_warns_naming_the_plugin_and_the_replacement(project) -> None:
    class Old:
        @wisp.hookimpl
        def wisp_greet(self, app):
            return "hi"

    class Loud:
        @wisp.hookimpl
        def wisp_greet_v2(self, app, name, loud):
            return "HI"

    class New:
        @wisp.hookimpl
        def wisp_greet_v2(self, app, name):
            return "hi"

    app = project.app()
    app.register(Provider(), "provider")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        app.register(Old(), "old-greeter")
        app.register(Loud(), "loud-greeter")
        app.register(New(), "new-greeter")
    assert {w.category for w in record} == {wisp.WispDeprecationWarning}
    messages = [str(w.message) for w in record]
    assert messages == [
        "plugin 'old-greeter' (api) implements the deprecated hook 'wisp_greet': deprecated "
        "since Wisp 0.2 and removed in 1.0; implement wisp_greet_v2(app, name) instead",
        "plugin 'loud-greeter' (api) uses the deprecated argument 'loud' of hook "
        "'wisp_greet_v2': deprecated since Wisp 0.2 and removed in 1.0; read "
        "ctx.options['volume'] instead",
    ]
    assert {"old-greeter", "loud-greeter", "new-greeter"} <= set(names(app))


def test_a_deprecated_hook_registered_before_its_spec_warns_too(project) -> None:
    class Old:
        @wisp.hookimpl
        def wisp_greet(self, app):
            return "hi"

    app = project.app()
    app.register(Old(), "early")
    with pytest.warns(wisp.WispDeprecationWarning, match="plugin 'early' .*wisp_greet_v2"):
        app.register(Provider(), "provider")


def test_deprecation_as_error_makes_the_plugin_fail_to_load(project) -> None:
    class Old:
        @wisp.hookimpl
        def wisp_greet(self, app):
            return "hi"

    app = project.app()
    app.register(Provider(), "provider")
    with warnings.catch_warnings():
        warnings.simplefilter("error", wisp.WispDeprecationWarning)
        assert app.register(Old(), "old") is False
    [failure] = app.pluginmanager.failures
    assert failure.stage == "register"
    assert "plugin 'old' (api) implements the deprecated hook 'wisp_greet'" in failure.message
    assert "old" not in names(app)


# -- wisp data delete-user -----------------------------------------------------------------


@pytest.mark.needs_plugin("basics", "policy", "storage")
async def test_delete_user_removes_what_each_plugin_stores(
    project, database, capsys, monkeypatch
) -> None:
    from wisp.plugins.policy.engine import Action, Rule, Scope

    url, schema = database
    project.write(
        "wisp.toml",
        f"""
        [wisp]
        autoload = false
        plugins = ["storage", "policy", "basics"]

        [storage]
        url = "{url}"
        schema = "{schema}"
        auto_migrate = true
        """,
    )
    async with project.app() as app:
        gd = app.services.get("guild_data")
        for guild in (100, 200):
            await gd.set(guild, "reminders", "user:42", {"n": 1})
            await gd.set(guild, "reminders", "user:42:last", 5)
            await gd.set(guild, "reminders", "user:420", "not 42")
        policy = app.services.get("policy")
        for guild in (100, 200):
            await policy.add(Rule("fun.roll", Action.DENY, Scope.USER, 42, guild_id=guild), by=7)
            await policy.add(
                Rule("fun.roll", Action.ALLOW, Scope.GUILD, guild, guild_id=guild), by=42
            )
    project.write("wispconf.py", "import wisp\n")  # no record: no data statement
    monkeypatch.chdir(project.root)
    assert await asyncio.to_thread(main, ["data", "delete-user", "42", "--guild", "100"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("deleting the data of user 42 (guild 100)\n")
    assert "  storage: guild data rows: 2\n" in out
    assert (
        "  policy: user-scoped rules: 1, rules anonymised: 1, legacy audit entries anonymised: 0\n"
    ) in out
    assert "plugins without a data statement (not covered): wispconf.py\n" in out
    async with project.app() as app:
        gd = app.services.get("guild_data")
        assert await gd.get_all(100, "reminders") == {"user:420": "not 42"}
        assert len(await gd.get_all(200, "reminders")) == 3, "other guilds keep theirs"
        rules = await app.services.get("policy").rules(100)
        assert [r.scope for r in rules] == [Scope.GUILD]
    assert await asyncio.to_thread(main, ["data", "delete-user", "42"]) == 0
    out = capsys.readouterr().out
    assert "deleting the data of user 42 (every guild)" in out
    assert "  storage: guild data rows: 2\n" in out


def test_delete_user_refuses_a_bad_id(project, monkeypatch, capsys) -> None:
    monkeypatch.chdir(project.root)
    with pytest.raises(SystemExit):
        main(["--no-autoload", "data", "delete-user", "bob"])
    assert "argument USER_ID: 'bob' is not a Discord id (a number)" in capsys.readouterr().err


def test_delete_user_names_plugins_that_store_data_without_the_hook(
    project, monkeypatch, capsys
) -> None:
    project.write(
        "wispconf.py",
        """
        import wisp

        WISP_PLUGIN = wisp.PluginMetadata(name="notes", data="Notes per user.", user_data=True)
        """,
    )
    monkeypatch.chdir(project.root)
    assert main(["--no-autoload", "data", "delete-user", "42"]) == 1
    captured = capsys.readouterr()
    assert (
        "plugins that store user data but implement no wisp_delete_user_data: wispconf.py"
        in captured.err
    )
    assert main(["--no-autoload", "doctor"]) == 1
    assert (
        "FAIL plugin 'wispconf.py' stores user data but does not implement wisp_delete_user_data"
        in capsys.readouterr().out
    )


# -- start-up cost -------------------------------------------------------------------------

HELP_PROBE = """
import contextlib, io, sys
from unittest import mock

import importlib_metadata

import wisp.pluginmanager
from wisp.cli.main import main

scans = []
real = importlib_metadata.entry_points

def counting(**kwargs):
    scans.append(kwargs)
    return real(**kwargs)

with mock.patch.object(wisp.pluginmanager.importlib_metadata, "entry_points", counting):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(["--help"])
heavy = sorted(
    m for m in ("sqlalchemy", "alembic", "discord", "redis", "aiosqlite", "asyncpg")
    if m in sys.modules
)
print(len(scans), ",".join(heavy))
"""


def test_help_scans_entry_points_once_and_imports_no_heavy_dependency(tmp_path) -> None:
    import importlib.metadata
    import os
    import subprocess
    import sys

    # Only the bundled plugins: third-party ones installed here are not ours to judge.
    others = sorted(
        ep.name
        for ep in importlib.metadata.entry_points(group="wisp")
        if ep.dist is not None and ep.dist.metadata["Name"] != "wisp-framework"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WISP_")}
    env["WISP_DISABLE_PLUGINS"] = ",".join(others)
    out = subprocess.run(
        [sys.executable, "-c", HELP_PROBE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.strip()
    assert out == "1", f"entry-point scans, heavy modules imported by `wisp --help`: {out}"


def test_wisp_requires_may_name_a_local_file(project) -> None:
    project.write("wisp.toml", '[wisp]\ncommand_paths = ["bot"]\n')
    project.write("bot/hello.py", "import wisp\n")
    project.write("wispconf.py", "wisp_requires = ['bot/hello.py', 'bot/gone.py']\n")
    app = project.app().bootstrap()
    [failure] = app.pluginmanager.failures
    assert failure.message == (
        "plugin 'wispconf.py' requires plugin 'bot/gone.py', which is not installed or not loaded"
    )
