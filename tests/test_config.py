from __future__ import annotations

import json
from typing import Literal

import attrs
import pytest

import wisp
from wisp.cli.main import main
from wisp.config import not_negative, positive, redact


@attrs.frozen
class Limits:
    per_minute: int = 10
    burst: int = 2


@attrs.frozen
class GreeterConfig:
    greeting: str = "hello"
    retries: int = attrs.field(default=3, validator=positive)
    ratio: float = 0.5
    enabled: bool = True
    channels: list[int] = attrs.field(factory=list)
    mode: Literal["fast", "safe"] = "safe"
    limits: Limits = attrs.field(factory=Limits)
    api_token: str = ""
    database_url: str = attrs.field(default="", metadata={"secret": True})
    admins: list[int] | None = None


class Greeter:
    @wisp.hookimpl
    def wisp_config_sections(self):
        return {"greeter": GreeterConfig}


def app_with(project, toml: str = "", **kwargs) -> wisp.Wisp:
    if toml:
        project.write("wisp.toml", toml)
    app = project.app(**kwargs)
    app.register(Greeter(), "greeter")
    return app


def test_file_values_are_structured_into_the_plugin_class(project) -> None:
    app = app_with(
        project,
        """
        [greeter]
        greeting = "hi"
        retries = 5
        channels = [1, 2]
        mode = "fast"

        [greeter.limits]
        burst = 9
    """,
    ).configure()
    cfg = app.config.section(GreeterConfig)
    assert cfg == GreeterConfig(
        greeting="hi", retries=5, channels=[1, 2], mode="fast", limits=Limits(burst=9)
    )
    assert app.config.section("greeter") is cfg


def test_environment_wins_over_the_file(project, monkeypatch) -> None:
    monkeypatch.setenv("WISP_GREETER__RETRIES", "7")
    monkeypatch.setenv("WISP_GREETER__ENABLED", "false")
    monkeypatch.setenv("WISP_GREETER__CHANNELS", "3, 4")
    monkeypatch.setenv("WISP_GREETER__ADMINS", "[5, 6]")
    monkeypatch.setenv("WISP_GREETER__LIMITS__PER_MINUTE", "60")
    monkeypatch.setenv("WISP_LOG_LEVEL", "debug")
    app = app_with(project, "[greeter]\nretries = 5\nenabled = true\n").configure()
    cfg = app.config.section(GreeterConfig)
    assert (cfg.retries, cfg.enabled, cfg.channels, cfg.limits) == (
        7,
        False,
        [3, 4],
        Limits(per_minute=60),
    )
    assert cfg.admins == [5, 6]  # an optional list is still a list
    assert app.config.core.log_level == "debug"


def test_every_bad_key_is_reported_at_once_with_source(project, monkeypatch) -> None:
    monkeypatch.setenv("WISP_GREETER__RATIO", "lots")
    monkeypatch.setenv("WISP_GREETER__COLOUR", "blue")
    app = app_with(
        project,
        """
        [wisp]
        log_level = "LOUD"

        [greeter]
        retries = -1
        enabled = "maybe"
        channels = ["general"]
        mode = "reckless"
        unknown_key = 1

        [greeter.limits]
        burst = "two"
    """,
    )
    with pytest.raises(wisp.ConfigError) as info:
        app.configure()
    problems = info.value.problems
    toml = project.root / "wisp.toml"
    expected = [
        f"wisp.log_level: must be one of TRACE, DEBUG, INFO, SUCCESS, WARNING, ERROR, CRITICAL; "
        f"got 'LOUD' (at {toml}:2)",
        f"greeter.unknown_key: unknown key (at {toml}:9)",
        "greeter.colour: unknown key (from environment variable WISP_GREETER__COLOUR)",
        f"greeter.retries: must be greater than 0; got -1 (at {toml}:5)",
        "greeter.ratio: expected float, got 'lots' (from environment variable WISP_GREETER__RATIO)",
        f"greeter.enabled: expected bool, got 'maybe' (at {toml}:6)",
        f"greeter.channels: expected list[int], got ['general'] (at {toml}:7): invalid literal "
        "for int() with base 10: 'general'",
        f"greeter.mode: expected 'fast' or 'safe', got 'reckless' (at {toml}:8)",
        f"greeter.limits.burst: expected int, got 'two' (at {toml}:12)",
    ]
    for fragment in expected:
        assert any(p.startswith(fragment) for p in problems), (fragment, problems)
    assert len(problems) == len(expected)
    assert str(info.value).startswith(f"invalid configuration ({len(expected)} problem(s))")


def test_secrets_are_redacted_in_errors_and_dumps(project, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WISP_GREETER__DATABASE_URL", "postgresql://bot:s3cret@db/wisp")
    app = app_with(project, '[greeter]\napi_token = "tok-123"\n').configure()
    dumped = json.dumps(app.config.as_dict())
    assert "tok-123" not in dumped and "s3cret" not in dumped
    assert app.config.as_dict()["greeter"]["api_token"] == "***"

    project.write("wisp.toml", "[greeter]\napi_token = 12345\n")
    app = app_with(project)
    with pytest.raises(wisp.ConfigError) as info:
        app.configure()
    assert "12345" not in str(info.value)
    assert "greeter.api_token: expected str, got *** (a int)" in str(info.value)
    assert redact({"url": "redis://:pw@localhost:6379/0", "n": 1}) == {
        "url": "redis://:***@localhost:6379/0",
        "n": 1,
    }


@pytest.mark.needs_plugin("accesslog")
def test_cli_config_prints_redacted_config(project, monkeypatch, capsys) -> None:
    project.write("wisp.toml", "[wisp]\nautoload = false\n")
    monkeypatch.setenv("WISP_PLUGINS", "accesslog")
    monkeypatch.chdir(project.root)
    assert main(["config"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["wisp"]["plugins"] == ["accesslog"]
    assert out["accesslog"] == {"events": False, "slow_ms": 1000.0}


def test_toml_syntax_error_names_file_and_line(project) -> None:
    project.write("wisp.toml", "[wisp]\nlog_level = \n")
    with pytest.raises(wisp.ConfigError, match=r"wisp.toml: not valid TOML: .*line 2"):
        project.app().configure()


def test_two_plugins_cannot_own_one_section(project) -> None:
    app = app_with(project)
    app.register(
        type(
            "Other",
            (),
            {"wisp_config_sections": wisp.hookimpl(lambda self: {"greeter": GreeterConfig})},
        )(),
        "other",
    )
    with pytest.raises(
        wisp.ConfigError,
        match=r"\[greeter\]: plugin 'greeter' declares a section already owned "
        r"by 'other'",
    ):
        app.configure()


def test_unused_sections_warn_but_do_not_fail(project, log_lines) -> None:
    project.write("wisp.toml", "[blocked_plugin]\nx = 1\n")
    project.app().configure()
    assert any("[blocked_plugin] is not used" in r["message"] for r in log_lines)


def test_required_keys_are_reported(project) -> None:
    @attrs.frozen
    class Needs:
        token: str

    app = project.app()
    app.register(
        type("P", (), {"wisp_config_sections": wisp.hookimpl(lambda self: {"needs": Needs})})(), "p"
    )
    with pytest.raises(
        wisp.ConfigError,
        match=r"needs.token: required \(str\), not given "
        r"\(in \[needs\] or WISP_NEEDS__TOKEN\)",
    ):
        app.configure()


def test_positive_names_its_field_in_code_and_allows_unset() -> None:
    @attrs.frozen
    class Sizes:
        batch: int = attrs.field(default=1, validator=positive)
        timeout: float | None = attrs.field(default=None, validator=positive)

    assert Sizes(batch=5, timeout=None).timeout is None
    with pytest.raises(ValueError, match=r"^batch must be greater than 0$"):
        Sizes(batch=0)
    with pytest.raises(ValueError, match=r"^timeout must be greater than 0$"):
        Sizes(timeout=-0.5)


def test_not_negative_allows_zero_and_unset_and_refuses_nan() -> None:
    @attrs.frozen
    class Margins:
        margin: float = attrs.field(default=0.0, validator=not_negative)
        reserve: int | None = attrs.field(default=None, validator=not_negative)

    assert Margins(margin=0.0, reserve=None).margin == 0.0
    with pytest.raises(ValueError, match=r"^reserve must be 0 or more$"):
        Margins(reserve=-1)
    with pytest.raises(ValueError, match=r"^margin must be 0 or more$"):
        Margins(margin=float("nan"))
    with pytest.raises(ValueError, match=r"^margin must be greater than 0$"):
        attrs.make_class("Sizes", {"margin": attrs.field(validator=positive)})(float("nan"))
