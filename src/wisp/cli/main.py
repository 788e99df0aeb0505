"""``wisp``: parse global options, load plugins, then build and run the subcommand.

Global options are parsed first (plugins may add subcommands, so the full
parser can only be built once they are loaded).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys
from collections.abc import Sequence
from typing import Any

from loguru import logger

from wisp import __version__
from wisp.app import Wisp
from wisp.cli.builtin import BUILTIN_COMMANDS
from wisp.cli.commands import CliCommand
from wisp.errors import ConfigError, PluginError
from wisp.logs import CLI_LOGGING, CliLogging, setup_logging

__all__ = ["build_parser", "main"]

LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


def _global_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("plugins and configuration")
    _add_global_options(g)


def _add_global_options(g: argparse._ActionsContainer) -> None:
    g.add_argument(
        "-p",
        dest="plugins",
        action="append",
        default=[],
        metavar="NAME",
        help="load plugin NAME (entry-point name or dotted module); '-p no:NAME' blocks it",
    )
    g.add_argument(
        "--no-autoload",
        action="store_true",
        help="do not load installed 'wisp' entry points (also WISP_DISABLE_PLUGIN_AUTOLOAD=1)",
    )
    g.add_argument(
        "--rootdir", metavar="DIR", help="project directory (default: nearest with wisp.toml)"
    )
    g.add_argument("-c", "--config", metavar="FILE", help="configuration file")
    g.add_argument(
        "--strict-plugins",
        action="store_true",
        default=None,
        help="fail at start-up if any plugin fails to load",
    )
    g.add_argument(
        "--trace",
        action="store_true",
        default=None,
        help="log every hook call with its duration (also WISP_TRACE=1)",
    )
    g.add_argument(
        "--log-level",
        metavar="LEVEL",
        type=str.upper,
        choices=LEVELS,
        help="override [wisp] log_level: " + ", ".join(LEVELS),
    )


def _split_plugin_args(values: Sequence[str]) -> tuple[list[str], list[str]]:
    load, block = [], []
    for v in values:
        if v.startswith("no:"):
            block.append(v[3:])
        else:
            load.append(v)
    return load, block


def make_app(ns: argparse.Namespace) -> Wisp:
    load, block = _split_plugin_args(ns.plugins)
    return Wisp(
        rootdir=ns.rootdir,
        config_file=ns.config,
        plugins=load,
        block=block,
        autoload=False if ns.no_autoload else None,
        strict_plugins=ns.strict_plugins,
        trace=ns.trace,
    )


def _collect_commands(app: Wisp) -> dict[str, CliCommand]:
    commands = {c.name: c for c in BUILTIN_COMMANDS}
    owners: dict[str, str] = {}
    try:
        found = list(app.pluginmanager.results("wisp_cli_commands", app=app))
    except PluginError as exc:
        logger.error("{}; its subcommands are missing", exc)
        found = []
    for plugin_name, result in found:
        for cmd in result:
            if not isinstance(cmd, CliCommand):
                logger.error(
                    "plugin {!r} returned {!r} from wisp_cli_commands; ignored", plugin_name, cmd
                )
            elif cmd.name in commands:
                # Fatal at configure time; `wisp plugins` and `wisp doctor` still show it.
                owner = owners.get(cmd.name)
                first = f"plugin {owner!r}" if owner else "the kernel"
                message = (
                    f"command 'wisp {cmd.name}' is defined twice: by {first} and by "
                    f"plugin {plugin_name!r}"
                )
                app.pluginmanager.collisions.append(message)
                logger.error("{}", message)
            else:
                commands[cmd.name] = cmd
                owners[cmd.name] = plugin_name
    return commands


def build_parser(app: Wisp, commands: dict[str, CliCommand]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wisp", description="Wisp: a Discord bot framework on a pluggy kernel."
    )
    parser.add_argument("--version", action="version", version=f"wisp {__version__}")
    _global_options(parser)
    # Global options are read before the subcommand is known; accept them after
    # it too (their values were already taken, so the copies keep no default).
    shared = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    _add_global_options(shared.add_argument_group("plugins and configuration"))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in sorted(commands):
        cmd = commands[name]
        p = sub.add_parser(name, help=cmd.help, description=cmd.help, parents=[shared])
        if cmd.add_arguments is not None:
            cmd.add_arguments(p)
        app.hook.wisp_cli_arguments(command=name, parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wisp`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    _global_options(pre)
    ns, _ = pre.parse_known_args(argv)
    app = make_app(ns)
    level = ns.log_level or app.config.core.log_level.upper()
    if app.trace and LEVELS.index(level) > LEVELS.index("DEBUG"):
        level = "DEBUG"  # trace lines are DEBUG records: asking for them means showing them
    setup_logging(level, app.config.core.log_format)
    # The process's sinks are this app's: a logging plugin may replace them.
    app.stash[CLI_LOGGING] = CliLogging(level, app.config.core.log_format)
    app.bootstrap()
    commands = _collect_commands(app)
    parser = build_parser(app, commands)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    cmd = commands[args.command]
    app.cli_command = args.command
    try:
        if cmd.configure:
            app.configure()
        return asyncio.run(_run(app, cmd, args))
    except ConfigError as exc:
        print(f"wisp: {exc}", file=sys.stderr)
        return 2
    except PluginError as exc:
        print(f"wisp: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


async def _run(app: Wisp, cmd: CliCommand, args: argparse.Namespace) -> int:
    if cmd.start:
        await app.start()
    try:
        # A plugin that added sub-actions to a command (wisp_cli_arguments) may
        # set_defaults(wisp_action=...) on them: that runs instead.
        runner = getattr(args, "wisp_action", None) or cmd.run
        result: Any = runner(app, args)
        if inspect.isawaitable(result):
            result = await result
        return int(result or 0)
    finally:
        if cmd.start:
            await app.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
