from __future__ import annotations

import pytest

import wisp
from wisp.pluginmanager import Origin

GOOD = """
import wisp

calls = []

@wisp.hookimpl
def wisp_configure(app):
    calls.append("configure")

@wisp.command(description="from a third-party plugin")
async def hello(ctx) -> str:
    return "hello from acme"
"""


def names(app: wisp.Wisp) -> list[str]:
    return [p.name for p in app.pluginmanager.plugins()]


@pytest.mark.needs_plugin("accesslog", "basics")
def test_bundled_plugins_load_through_entry_points(project) -> None:
    app = project.app(autoload=True).bootstrap()
    infos = {i.name: i for i in app.pluginmanager.plugins()}
    for name in ("accesslog", "basics"):
        assert infos[name].origin is Origin.BUNDLED
        assert infos[name].distribution == "wisp-framework"
        assert infos[name].version == wisp.__version__


def test_third_party_entry_point_is_loaded_with_its_distribution(project, site) -> None:
    site("acme-wisp", "1.2.3", {"acme": "acme_plugin"}, {"acme_plugin": GOOD})
    app = project.app(autoload=True).configure()
    info = app.pluginmanager.info("acme")
    assert (info.origin, info.distribution, info.version) == (
        Origin.THIRD_PARTY,
        "acme-wisp",
        "1.2.3",
    )
    assert info.plugin.calls == ["configure"]
    assert app.commands["hello"].plugin == "acme"


@pytest.mark.parametrize("how", ["cmdline", "env", "toml"])
@pytest.mark.needs_plugin("accesslog", "basics")
def test_each_way_of_blocking_blocks(project, site, monkeypatch, how) -> None:
    site("acme-wisp", "1.2.3", {"acme": "acme_plugin"}, {"acme_plugin": GOOD})
    kwargs = {}
    if how == "cmdline":
        kwargs["block"] = ["acme"]
    elif how == "env":
        monkeypatch.setenv("WISP_DISABLE_PLUGINS", "nothing,acme")
    else:
        project.write("wisp.toml", '[wisp]\ndisable = ["acme"]\n')
    app = project.app(autoload=True, **kwargs).configure()
    assert "acme" not in names(app)
    assert "basics" in names(app), "blocking one plugin leaves the rest"
    assert "hello" not in app.commands
    assert "acme" in app.pluginmanager.blocked()
    assert app.pluginmanager.failures == []


def test_blocking_wins_over_explicit_request(project, site) -> None:
    site("acme-wisp", "1.2.3", {"acme": "acme_plugin"}, {"acme_plugin": GOOD})
    app = project.app(plugins=["acme"], block=["acme"]).bootstrap()
    assert "acme" not in names(app)


@pytest.mark.parametrize("how", ["flag", "env", "toml"])
def test_autoload_can_be_turned_off(project, monkeypatch, how) -> None:
    kwargs = {"autoload": None}
    if how == "flag":
        kwargs["autoload"] = False
    elif how == "env":
        monkeypatch.setenv("WISP_DISABLE_PLUGIN_AUTOLOAD", "1")
    else:
        project.write("wisp.toml", "[wisp]\nautoload = false\n")
    app = project.app(**kwargs).bootstrap()
    assert names(app) == []


def test_explicit_plugins_by_entry_point_module_and_env(project, site, monkeypatch) -> None:
    site(
        "acme-wisp",
        "1.2.3",
        {"acme": "acme_plugin"},
        {
            "acme_plugin": GOOD,
            "extra_mod": "import wisp\n",
            "env_mod": "import wisp\n",
            "toml_mod": "import wisp\n",
        },
    )
    monkeypatch.setenv("WISP_PLUGINS", "env_mod")
    project.write("wisp.toml", '[wisp]\nplugins = ["toml_mod"]\n')
    app = project.app(plugins=["acme", "extra_mod"]).bootstrap()  # autoload off
    infos = {i.name: i for i in app.pluginmanager.plugins()}
    assert list(infos) == ["acme", "extra_mod", "env_mod", "toml_mod"]
    assert infos["acme"].origin is Origin.CMDLINE and infos["acme"].distribution == "acme-wisp"
    assert infos["extra_mod"].origin is Origin.CMDLINE
    assert infos["env_mod"].origin is Origin.ENV
    assert infos["toml_mod"].origin is Origin.CONFIG


@pytest.mark.needs_plugin("accesslog", "basics")
def test_broken_plugins_are_reported_and_the_rest_loads(project, site) -> None:
    site(
        "broken-wisp",
        "0.1",
        {
            "broken": "broken_plugin",
            "typo": "typo_plugin",
            "badargs": "badargs_plugin",
            "missing": "no_such_module",
        },
        {
            "broken_plugin": "import wisp\nraise RuntimeError('cannot start: no API key')\n",
            "typo_plugin": "import wisp\n@wisp.hookimpl\ndef wisp_configur(app):\n    pass\n",
            "badargs_plugin": "import wisp\n@wisp.hookimpl\ndef wisp_configure(app, bot):\n"
            "    pass\n",
        },
    )
    site_ok = GOOD
    app = project.app(autoload=True, plugins=["no.such.dotted"])
    app.register(type("Ok", (), {"wisp_configure": wisp.hookimpl(lambda self: None)})(), "ok")
    del site_ok
    app.configure()
    failures = {f.name: f for f in app.pluginmanager.failures}
    assert set(failures) == {"broken", "typo", "badargs", "missing", "no.such.dotted"}
    assert failures["broken"].stage == "import"
    assert "RuntimeError: cannot start: no API key" in failures["broken"].message
    assert "broken_plugin.py, line 2" in failures["broken"].message
    assert failures["broken"].distribution == "broken-wisp"
    assert failures["broken"].version == "0.1"
    assert "broken-wisp 0.1" in failures["broken"].describe()
    assert failures["typo"].stage == "validate"
    assert "unknown hook 'wisp_configur'" in failures["typo"].message
    assert "did you mean 'wisp_configure'" in failures["typo"].message
    assert failures["badargs"].stage == "register"
    assert "bot" in failures["badargs"].message
    assert "ModuleNotFoundError" in failures["missing"].message
    assert {"accesslog", "basics", "ok"} <= set(names(app))
    assert not {"broken", "typo", "badargs"} & set(names(app))


def test_strict_plugins_makes_a_failure_fatal(project, site) -> None:
    site(
        "broken-wisp",
        "0.1",
        {"broken": "broken_plugin"},
        {"broken_plugin": "raise ImportError('nope')\n"},
    )
    with pytest.raises(wisp.PluginError, match="broken"):
        project.app(autoload=True, strict_plugins=True).configure()
    project.write("wisp.toml", "[wisp]\nstrict_plugins = true\n")
    with pytest.raises(wisp.PluginError, match=r"broken-wisp 0\.1"):
        project.app(autoload=True).configure()


def test_optionalhook_may_name_a_hook_nobody_specifies(project) -> None:
    class P:
        @wisp.hookimpl(optionalhook=True)
        def wisp_someday(self):
            pass

    app = project.app()
    app.register(P(), "p")
    app.bootstrap()
    assert names(app) == ["p"] and app.pluginmanager.failures == []


def test_required_plugins_missing_or_blocked_are_named(project, site) -> None:
    site(
        "dep-wisp",
        "1.0",
        {
            "vault": "vault_plugin",
            "gatekeeper": "gatekeeper_plugin",
            "auditor": "auditor_plugin",
            "charts": "charts_plugin",
        },
        {
            "vault_plugin": "import wisp\n",
            "gatekeeper_plugin": "wisp_requires = ['vault']\n",
            "auditor_plugin": "wisp_requires = ('gatekeeper',)\n",
            "charts_plugin": "wisp_requires = 'telemetry'\n",
        },
    )
    app = project.app(autoload=True, block=["vault"]).bootstrap()
    failures = {f.name: f.message for f in app.pluginmanager.failures}
    assert failures["gatekeeper"] == (
        "plugin 'gatekeeper' requires plugin 'vault', which is blocked (-p no:vault)"
    )
    assert (
        failures["auditor"] == "plugin 'auditor' requires plugin 'gatekeeper', which failed to load"
    )
    assert failures["charts"] == (
        "plugin 'charts' requires plugin 'telemetry', which is not installed or not loaded"
    )
    app2 = project.app(autoload=True).bootstrap()
    assert [f.name for f in app2.pluginmanager.failures] == ["charts"]
    assert {"vault", "gatekeeper", "auditor"} <= set(names(app2))


def test_order_does_not_depend_on_entry_point_scan_order(project, site) -> None:
    # Distributions are written in reverse name order; the call order is by name.
    site(
        "zeta-dist",
        "1",
        {"aaa": "aaa_plugin"},
        {
            "aaa_plugin": "import wisp\n@wisp.hookimpl\ndef wisp_config_sections():\n"
            "    return None\n"
        },
    )
    site(
        "alpha-dist",
        "1",
        {"zzz": "zzz_plugin"},
        {
            "zzz_plugin": "import wisp\n@wisp.hookimpl\ndef wisp_config_sections():\n"
            "    return None\n"
        },
    )
    app = project.app(autoload=True).bootstrap()
    order = [
        i.plugin_name for i in app.pluginmanager.impls_in_call_order(app.hook.wisp_config_sections)
    ]
    # Entry points register sorted by name and pluggy calls the last registered
    # first: the call order is reverse name order, whatever the scan order was.
    assert {"aaa", "zzz"} <= set(order)
    assert order == sorted(order, reverse=True)


def test_plugins_can_add_hookspecs_and_bad_implementations_are_dropped(project) -> None:
    class Specs:
        @wisp.hookspec
        def wisp_cache_backends(self, metadata):
            """Return models."""

    class Provider:
        @wisp.hookimpl
        def wisp_addhooks(self, pluginmanager):
            pluginmanager.add_hookspecs(Specs)

    class GoodUser:
        @wisp.hookimpl
        def wisp_cache_backends(self, metadata):
            return ["model"]

    class BadUser:
        @wisp.hookimpl
        def wisp_cache_backends(self, metadata, engine):
            return ["bad"]

    app = project.app()
    # Users register before the provider: their hooks are unknown until addhooks runs.
    app.register(GoodUser(), "good")
    app.register(BadUser(), "bad")
    app.register(Provider(), "provider")
    app.bootstrap()
    assert [f.name for f in app.pluginmanager.failures] == ["bad"]
    assert "engine" in app.pluginmanager.failures[0].message
    assert app.hook.wisp_cache_backends(metadata=None) == [["model"]]


def test_trace_logs_hook_calls_with_duration(project, log_lines) -> None:
    app = project.app(trace=True)
    app.register(type("P", (), {"wisp_configure": wisp.hookimpl(lambda self: None)})(), "p")
    app.configure()
    traced = [r["message"] for r in log_lines if r["message"].startswith("trace hook")]
    assert any(m.startswith("trace hook wisp_configure [p]") and m.endswith("us") for m in traced)


def test_wrappers_on_set_up_hooks_are_reported(project) -> None:
    class Wrapper:
        @wisp.hookimpl(wrapper=True)
        def wisp_commands(self, app):
            return (yield)

    app = project.app()
    app.register(Wrapper(), "wrapper")
    app.bootstrap()
    [failure] = app.pluginmanager.failures
    assert "hook 'wisp_commands' does not take pluggy wrappers" in failure.message
    assert "tryfirst/trylast" in failure.message


def test_a_module_beside_wisp_toml_loads_with_p_once(project) -> None:
    project.write(
        "weather.py",
        "import wisp\n\n@wisp.command()\nasync def forecast(ctx):\n    return 'rain'\n",
    )
    project.write("wisp.toml", '[wisp]\nplugins = ["weather"]\n')
    app = project.app(plugins=["weather"]).configure()
    assert app.pluginmanager.failures == []
    assert app.pluginmanager.info("weather").origin is Origin.CMDLINE
    assert "forecast" in app.commands


@pytest.mark.needs_plugin("accesslog", "basics")
def test_list_variables_take_json_too(project, monkeypatch) -> None:
    monkeypatch.setenv("WISP_DISABLE_PLUGINS", '["accesslog", "basics"]')
    app = project.app(autoload=True).configure()
    assert not {"accesslog", "basics"} & set(names(app))
    blocked = app.pluginmanager.blocked()  # and WISP_TEST_BLOCK's, in the nox matrix
    assert {name: blocked[name] for name in ("accesslog", "basics")} == {
        "accesslog": "WISP_DISABLE_PLUGINS",
        "basics": "WISP_DISABLE_PLUGINS",
    }
