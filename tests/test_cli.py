from __future__ import annotations

import subprocess

import pytest

from wisp.cli.main import main

BROKEN_AND_GOOD = {
    "bot/hello.py": """
        import wisp

        @wisp.command(description="Say hello.")
        async def hello(ctx, name: str = "world") -> str:
            return f"hello {name}"
    """,
    "bot/fail.py": """
        import wisp

        @wisp.command()
        async def fail(ctx) -> str:
            raise wisp.UserError("That dice has no seventh side.")
    """,
}


@pytest.fixture
def cli_project(project, monkeypatch):
    project.write("wisp.toml", '[wisp]\ncommand_paths = ["bot"]\n')
    for rel, text in BROKEN_AND_GOOD.items():
        project.write(rel, text)
    monkeypatch.chdir(project.root)
    return project


def test_help_lists_builtin_and_plugin_commands(cli_project, capsys) -> None:
    cli_project.write(
        "wispconf.py",
        """
        import wisp

        def run(app, args):
            print("greeted", args.who)
            return 0

        @wisp.hookimpl
        def wisp_cli_commands(app):
            return [wisp.CliCommand("greet", "greet someone", run,
                                    lambda p: p.add_argument("who"))]

        @wisp.hookimpl
        def wisp_cli_arguments(command, parser):
            if command == "run":
                parser.add_argument("--dry-run-greeting", action="store_true")
    """,
    )
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for sub in ("plugins", "doctor", "config", "call", "run", "greet"):
        assert sub in out
    assert main(["greet", "bob"]) == 0
    assert capsys.readouterr().out == "greeted bob\n"
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--dry-run-greeting" in capsys.readouterr().out


@pytest.mark.needs_plugin("accesslog", "basics")
def test_plugins_lists_name_distribution_origin_and_hooks(cli_project, capsys) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "wisp-framework" in lines["accesslog"] and "bundled" in lines["accesslog"]
    assert "wisp_middleware" in lines["accesslog"]
    assert "command file" in lines["bot/hello.py"]


@pytest.mark.needs_plugin("accesslog", "features", "metrics", "ratelimit", "storage")
def test_plugins_hooks_and_pipeline(cli_project, capsys) -> None:
    assert main(["plugins", "--hooks"]) == 0
    out = capsys.readouterr().out
    block = out.split("wisp_middleware\n", 1)[1].splitlines()
    impls = [line.split(". ", 1)[1] for line in block if line.startswith("  ")]
    impls = impls[: next((i for i, x in enumerate(block) if not x.startswith("  ")), len(block))]
    assert "accesslog" in impls
    # bundled entry points: registered by name, called last-registered first
    assert impls == sorted(impls, reverse=True)
    assert main(["plugins", "--pipeline"]) == 0
    out = capsys.readouterr().out
    assert "command 'hello' (plugin bot/hello.py" in out
    hello = out.split("command 'hello'", 1)[1].split("\ncommand ", 1)[0].splitlines()[1:]
    assert hello == [
        "  1. [ 200] accesslog (plugin accesslog)",
        "  2. [ 201] metrics (plugin metrics)",
        "  3. [ 300] feature-flags (plugin features)",
        "  4. [ 500] ratelimit (plugin ratelimit)",  # a guild may set limits on any command
        "  -> handler hello",
    ]


@pytest.mark.needs_plugin("accesslog")  # it blocks accesslog itself
def test_blocking_from_the_command_line(cli_project, capsys) -> None:
    assert main(["-p", "no:accesslog", "plugins", "--pipeline"]) == 0
    out = capsys.readouterr().out
    assert "accesslog" not in out.split("blocked")[0]
    assert main(["-p", "no:accesslog", "plugins"]) == 0
    assert "blocked: accesslog (-p no:accesslog)" in capsys.readouterr().out


def test_call_runs_a_command_and_maps_errors(cli_project, capsys) -> None:
    assert main(["call", "hello", "name=ann"]) == 0
    assert capsys.readouterr().out == "hello ann\n"
    assert main(["call", "fail"]) == 1
    assert "That dice has no seventh side." in capsys.readouterr().err
    assert main(["call", "nope"]) == 2
    assert "no command 'nope'" in capsys.readouterr().err
    assert main(["call", "hello", "oops"]) == 2
    assert "not KEY=VALUE" in capsys.readouterr().err


def test_doctor_is_green_then_red_on_a_broken_plugin(cli_project, capsys) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "doctor: all good" in out
    cli_project.write("bot/broken.py", "import wisp\nraise RuntimeError('half-written')\n")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL plugin 'bot/broken.py'" in out
    assert "RuntimeError: half-written" in out and "broken.py, line 2" in out
    assert main(["--strict-plugins", "call", "hello"]) == 3
    assert "strict_plugins" in capsys.readouterr().err


@pytest.mark.needs_plugin("accesslog")
def test_doctor_reports_bad_config_and_unhealthy_services(cli_project, capsys) -> None:
    cli_project.write("wisp.toml", '[wisp]\ncommand_paths = ["bot"]\n[accesslog]\nslow_ms = 0\n')
    assert main(["doctor"]) == 1
    assert "accesslog.slow_ms: must be greater than 0" in capsys.readouterr().out
    cli_project.write("wisp.toml", '[wisp]\ncommand_paths = ["bot"]\n')
    cli_project.write(
        "wispconf.py",
        """
        import wisp

        class Db(wisp.BaseService):
            name = "weather_api"

            async def health(self):
                return wisp.Health(False, "connection refused")

        @wisp.hookimpl
        def wisp_services():
            return Db()
    """,
    )
    assert main(["doctor"]) == 1
    assert "FAIL weather_api (plugin wispconf.py): connection refused" in capsys.readouterr().out


@pytest.mark.needs_plugin("accesslog")
def test_bad_config_exits_2_with_every_problem(cli_project, capsys) -> None:
    cli_project.write(
        "wisp.toml",
        '[wisp]\ncommand_paths = ["bot"]\nlog_format = "xml"\n[accesslog]\nslow_ms = "fast"\n',
    )
    assert main(["call", "hello"]) == 2
    err = capsys.readouterr().err
    assert "invalid configuration (2 problem(s))" in err
    assert "wisp.log_format" in err and "accesslog.slow_ms" in err


@pytest.mark.needs_plugin("accesslog")
@pytest.mark.slow
def test_console_script_runs(cli_project, wisp_exe) -> None:
    done = subprocess.run(
        [wisp_exe, "call", "hello", "name=console"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cli_project.root,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello console\n"
    assert "cli hello ok" in done.stderr  # the bundled accesslog plugin's line


def test_a_crashing_configure_hook_names_the_plugin(cli_project, capsys) -> None:
    cli_project.write(
        "wispconf.py",
        """
        import wisp

        @wisp.hookimpl
        def wisp_configure(app):
            raise KeyError("GUILD_ID")
    """,
    )
    assert main(["call", "hello"]) == 3
    err = capsys.readouterr().err
    assert (
        "plugin 'wispconf.py' (-, wispconf) failed in wisp_configure: KeyError: 'GUILD_ID'" in err
    )
    assert "wispconf.py, line 5" in err


def test_global_options_may_follow_the_subcommand(cli_project, capsys) -> None:
    assert main(["plugins", "-p", "no:accesslog"]) == 0
    assert "blocked: accesslog (-p no:accesslog)" in capsys.readouterr().out


@pytest.mark.slow
def test_unhandled_errors_never_log_local_values(cli_project, wisp_exe) -> None:
    cli_project.write(
        "bot/leak.py",
        """
        import wisp

        @wisp.command()
        async def leak(ctx) -> str:
            token = "hunter2-secret"
            raise RuntimeError("boom " + str(len(token)))
    """,
    )
    done = subprocess.run(
        [wisp_exe, "call", "leak"], capture_output=True, text=True, timeout=60, cwd=cli_project.root
    )
    assert done.returncode == 1
    assert "RuntimeError: boom 14" in done.stderr  # the traceback is logged...
    assert "hunter2" not in done.stderr + done.stdout  # ...without local variables


def test_command_files_may_not_implement_hooks(cli_project, capsys) -> None:
    cli_project.write(
        "bot/admin/wispconf.py",
        """
        import wisp

        @wisp.hookimpl
        def wisp_error_message(ctx, error):
            return "admin says no"
    """,
    )
    cli_project.write(
        "bot/admin/kick.py",
        """
        import wisp

        @wisp.command()
        async def kick(ctx) -> str:
            raise wisp.UserError("x")
    """,
    )
    cli_project.write(
        "bot/zzz.py",
        """
        import wisp

        @wisp.hookimpl
        def wisp_error_message(ctx, error):
            return "a command file overriding everyone"
    """,
    )
    assert main(["call", "kick"]) == 1
    captured = capsys.readouterr()
    assert "admin says no" in captured.err
    assert main(["plugins"]) == 1
    err = capsys.readouterr().err
    assert "plugin 'bot/zzz.py'" in err
    assert "move the hook implementation(s) wisp_error_message to a wispconf.py" in err


def test_failures_are_logged_when_the_bot_runs(cli_project, capsys) -> None:
    cli_project.write("bot/half.py", "import wisp\nraise ImportError('half-written')\n")
    assert main(["call", "hello"]) == 0
    assert "plugin 'bot/half.py'" in capsys.readouterr().err


@pytest.mark.needs_plugin("accesslog", "basics")
def test_plugin_registered_hook_sees_every_plugin(project) -> None:
    import wisp

    seen = []

    class Watcher:
        @wisp.hookimpl
        def wisp_plugin_registered(self, plugin_name):
            seen.append(plugin_name)

    app = project.app(autoload=True)
    app.register(Watcher(), "watcher")
    app.bootstrap()
    # historic: the watcher hears about itself and everything after it
    assert seen[0] == "watcher"
    assert {"accesslog", "basics"} <= set(seen)
