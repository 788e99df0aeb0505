"""The kernel's own subcommands: plugins, doctor, config, call, run, data, plugin."""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import sys
from typing import TYPE_CHECKING, Any

from wisp.cli.commands import CliCommand
from wisp.cli.data import DATA_COMMAND
from wisp.cli.scaffold import PLUGIN_COMMAND
from wisp.errors import ConfigError, PluginError

if TYPE_CHECKING:
    from wisp.app import Wisp

__all__ = ["BUILTIN_COMMANDS"]


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


# -- wisp plugins -------------------------------------------------------------


def _plugins_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--hooks", action="store_true", help="per hook, its implementations in call order"
    )
    g.add_argument(
        "--pipeline",
        action="store_true",
        help="per command and event handler, the compiled middleware order",
    )
    g.add_argument(
        "--json",
        action="store_true",
        help="every plugin (loaded, blocked, broken, incompatible) as JSON, with its record",
    )


def plugins_report(app: Wisp) -> dict[str, Any]:
    """What ``wisp plugins --json`` prints: every plugin Wisp saw, and its status."""
    from wisp import __version__
    from wisp.metadata import PLUGIN_API_VERSION

    pm = app.pluginmanager
    rows: list[dict[str, Any]] = []
    for i in pm.plugins():
        rows.append(
            {
                "name": i.name,
                "distribution": i.distribution,
                "version": i.plugin_version,
                "origin": i.origin.value,
                "hooks": pm.hooks_of(i.name),
                "status": "loaded",
                "cause": None,
                "import_ms": None if i.import_ms is None else round(i.import_ms, 3),
                "path": None if i.path is None else str(i.path),
                "metadata": None if i.metadata is None else i.metadata.as_dict(),
            }
        )
    for name, reason in sorted(pm.blocked().items()):
        ep = pm.entry_points.get(name)
        rows.append(
            {
                "name": name,
                "distribution": ep.distribution if ep else None,
                "version": ep.version if ep else None,
                "origin": None,
                "hooks": [],
                "status": "blocked",
                "cause": reason,
                "import_ms": None,
                "path": None,
                "metadata": None,
            }
        )
    for f in pm.failures:
        rows.append(
            {
                "name": f.name,
                "distribution": f.distribution,
                "version": f.version,
                "origin": f.origin.value,
                "hooks": [],
                "status": f.status,
                "cause": f"{f.stage}: {f.message}",
                "import_ms": None if f.import_ms is None else round(f.import_ms, 3),
                "path": None if f.path is None else str(f.path),
                "metadata": None,
            }
        )
    return {
        "wisp": __version__,
        "plugin_api": PLUGIN_API_VERSION,
        "plugins": rows,
        "collisions": list(pm.collisions),
    }


def _plugins(app: Wisp, args: argparse.Namespace) -> int:
    pm = app.pluginmanager
    if args.json:
        print(json.dumps(plugins_report(app), indent=2))
        return 1 if pm.failures or pm.collisions else 0
    if args.hooks:
        for hookname, impls in pm.hook_table():
            print(hookname)
            for n, impl in enumerate(impls, 1):
                flags = [
                    f
                    for f in ("tryfirst", "trylast", "wrapper", "hookwrapper", "optionalhook")
                    if getattr(impl, f)
                ]
                extra = f" ({', '.join(flags)})" if flags else ""
                print(f"  {n}. {impl.plugin_name}{extra}")
    elif args.pipeline:
        app.configure()
        targets = app.targets()
        if not targets:
            print("no commands or event handlers")
        for target in targets:
            compiled = app.compiled(target)
            print(f"{target.kind} {target.name!r} (plugin {target.plugin}, {target.source})")
            for n, mw in enumerate(compiled.middleware, 1):
                print(f"  {n}. [{mw.order:>4}] {mw.name} (plugin {mw.plugin})")
            print(f"  -> handler {getattr(target.handler, '__qualname__', target.handler)}")
    else:
        rows = [
            [i.name, i.dist_label, i.origin.value, ", ".join(pm.hooks_of(i.name)) or "-"]
            for i in pm.plugins()
        ]
        print(_table(rows, ["NAME", "DISTRIBUTION", "ORIGIN", "HOOKS"]))
        for name, reason in sorted(pm.blocked().items()):
            print(f"blocked: {name} ({reason})")
    for failure in pm.failures:
        print(f"FAILED: {failure.describe()}", file=sys.stderr)
    for collision in pm.collisions:
        print(f"COLLISION: {collision}", file=sys.stderr)
    return 1 if pm.failures or pm.collisions else 0


# -- wisp doctor --------------------------------------------------------------


async def _doctor(app: Wisp, args: argparse.Namespace) -> int:
    from wisp import __version__

    problems = 0
    print(f"wisp {__version__} on Python {platform.python_version()}")
    print(f"project directory: {app.rootdir}")
    print(f"configuration file: {app.config.path or '(none: defaults and environment)'}")
    pm = app.pluginmanager
    print(
        f"plugins: {len(pm.plugins())} loaded, {len(pm.failures)} failed, "
        f"{len(pm.blocked())} blocked"
    )
    for failure in pm.failures:
        problems += 1
        print(f"  FAIL {failure.describe()}")
    problems += _doctor_plugins(app)
    try:
        app.configure()
        print("configuration: ok")
    except (ConfigError, PluginError) as exc:
        print(f"configuration: FAIL\n{exc}")
        return 1
    print(f"commands: {len(app.commands)}, event handlers: {len(app.event_handlers)}")
    try:
        await app.start()
    except Exception as exc:
        print(f"start-up: FAIL {type(exc).__name__}: {exc}")
        return 1
    try:
        health = await app.services.health_all(timeout=args.timeout)
        ready = await app.services.ready_all(timeout=args.timeout)
    finally:
        await app.stop()
    print(f"services: {len(health)}")
    for name, h in health.items():
        mark = "ok  " if h.ok else "FAIL"
        problems += not h.ok
        print(f"  {mark} {name} (plugin {app.services.plugin_of(name)}): {h.detail}")
        r = ready[name]
        problems += h.ok and not r.ok
        # Without its own ready(), a service's readiness is its health again.
        own = hasattr(app.services.get(name), "ready")
        state = "ready" if r.ok else "NOT READY"
        print(f"       {state}: {r.detail}" if own or not r.ok else f"       {state}")
    print("doctor: " + ("all good" if not problems else f"{problems} problem(s)"))
    return 1 if problems else 0


def without_data_statement(app: Wisp) -> list[str]:
    """Plugins that say nothing about the user data they store (command files aside:
    they are the bot's own code)."""
    from wisp.pluginmanager import Origin

    return [
        i.name
        for i in app.pluginmanager.plugins()
        if i.origin is not Origin.LOCAL and (i.metadata is None or i.metadata.data is None)
    ]


def _doctor_plugins(app: Wisp) -> int:
    """Collisions, required plugins, gateway intents and data statements; problems found."""
    from wisp.metadata import PLUGIN_API_VERSION

    pm = app.pluginmanager
    problems = 0
    print(f"plugin API: {PLUGIN_API_VERSION}")
    for collision in pm.collisions:
        problems += 1
        print(f"  FAIL {collision}")
    required = app.config.core.required_plugins
    unmet = pm.check_required(required, app.required_where())
    if unmet is not None:
        problems += 1
        print(f"required plugins: FAIL {unmet}")
    elif required:
        print(f"required plugins: ok ({', '.join(required)})")
    intents = pm.intents()
    print("gateway intents:" + ("" if intents else " none declared"))
    for intent, needed_by in intents.items():
        print(f"  {intent}: {', '.join(needed_by)}")
    loaded = pm.plugins()
    silent = without_data_statement(app)
    if silent:
        print(f"plugins without a data statement: {', '.join(silent)}")
    for i in loaded:
        meta = i.metadata
        if meta and meta.user_data and "wisp_delete_user_data" not in pm.hooks_of(i.name):
            problems += 1
            print(
                f"  FAIL plugin {i.name!r} stores user data but does not implement "
                "wisp_delete_user_data"
            )
    return problems


def _doctor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per health check")


# -- wisp config --------------------------------------------------------------


def _config(app: Wisp, args: argparse.Namespace) -> int:
    print(json.dumps(app.config.as_dict(), indent=2, sort_keys=True, default=str))
    return 0


# -- wisp call ----------------------------------------------------------------


def _call_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="command name; quote multi-word names: 'policy set'")
    p.add_argument("options", nargs="*", metavar="KEY=VALUE", help="command options")
    p.add_argument("--guild", type=int, help="guild id for the context")
    p.add_argument("--channel", type=int, help="channel id for the context")
    p.add_argument("--user", type=int, help="user id for the context")


async def _call(app: Wisp, args: argparse.Namespace) -> int:
    options = {}
    for item in args.options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"wisp call: option {item!r} is not KEY=VALUE", file=sys.stderr)
            return 2
        options[key] = value
    if args.name not in app.commands:
        known = ", ".join(sorted(app.commands)) or "none"
        print(f"wisp call: no command {args.name!r} (known: {known})", file=sys.stderr)
        return 2
    async with app:  # services run only once the call is known to be valid
        outcome = await app.call(
            args.name, options, guild_id=args.guild, channel_id=args.channel, user_id=args.user
        )
    if outcome.response is not None and outcome.response.content is not None:
        stream = sys.stdout if outcome.ok else sys.stderr
        print(outcome.response.content, file=stream)
    return 0 if outcome.ok else 1


# -- wisp run -----------------------------------------------------------------


async def _run(app: Wisp, args: argparse.Namespace) -> int:
    pm = app.pluginmanager
    for impl in pm.impls_in_call_order(app.hook.wisp_run):
        kwargs = {"app": app, "args": args}
        try:
            result: Any = impl.function(*[kwargs[a] for a in impl.argnames])
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            raise pm.blame(impl.plugin_name, "wisp_run", exc) from exc
        if result is not None:
            return int(result)
    await app.serve()
    return 0


BUILTIN_COMMANDS = (
    CliCommand(
        "plugins",
        "list plugins, their hooks, or the compiled pipeline",
        _plugins,
        _plugins_args,
        configure=False,
    ),
    CliCommand(
        "doctor",
        "check plugins, configuration and services; non-zero on any problem",
        _doctor,
        _doctor_args,
        configure=False,
    ),
    CliCommand("config", "print the effective configuration (secrets redacted)", _config),
    CliCommand("call", "run one command through the pipeline from the shell", _call, _call_args),
    CliCommand("run", "start every service and serve until SIGINT or SIGTERM", _run),
    DATA_COMMAND,
    PLUGIN_COMMAND,
)
