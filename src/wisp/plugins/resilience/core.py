"""Named resilience policies: built from config and plugins, applied to
commands through metadata and to any call through the ``resilience`` service.

Bundled plugin ``resilience``; block it with ``-p no:resilience``.  Pattern
kinds come from the pattern plugins (``breaker``, ``retry``, ...) through
``wisp_resilience_patterns``; a policy is a list of steps, the first
outermost::

    [[resilience.policies.discord-api]]
    pattern = "timeout"
    seconds = 5

    [[resilience.policies.discord-api]]
    pattern = "breaker"
    failure_threshold = 5

A command opts in with ``@wisp.command(resilience="discord-api")``; code
uses ``app.services.get("resilience").policy("discord-api")`` as a decorator,
with ``.call()`` or ``async with``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

import wisp
from wisp.plugins.resilience.api import (
    AsyncFn,
    Pattern,
    PatternConfig,
    PatternKind,
    Policy,
    ResilienceEvent,
    current_priority,
    global_bus,
)
from wisp.targets import Target

__all__ = ["ResilienceConfig", "ResilienceService", "build_policies"]


WISP_PLUGIN = wisp.PluginMetadata(
    name="resilience",
    description="Named resilience policies: wisp resilience status.",
    api=">=1.0,<2",
    commands=("resilience status",),
    capabilities=("resilience.view",),
    data="Nothing.",
)


@attrs.frozen
class ResilienceConfig:
    """``[resilience]``: ``policies.NAME`` is an array of step tables."""

    policies: dict[str, list[dict[str, Any]]] = attrs.field(factory=dict)


def _kinds(app: wisp.Wisp) -> dict[str, tuple[PatternKind, str]]:
    kinds: dict[str, tuple[PatternKind, str]] = {}
    for plugin, result in app.pluginmanager.results("wisp_resilience_patterns"):
        for kind in result or ():
            if not isinstance(kind, PatternKind):
                raise wisp.PluginError(
                    f"plugin {plugin!r} returned {kind!r} from wisp_resilience_patterns; "
                    "expected wisp.plugins.resilience.api.PatternKind"
                )
            if kind.name in kinds:
                raise wisp.PluginError(
                    f"resilience pattern {kind.name!r} is provided by both plugin "
                    f"{kinds[kind.name][1]!r} and plugin {plugin!r}"
                )
            kinds[kind.name] = (kind, plugin)
    return kinds


def _unknown_kind(app: wisp.Wisp, name: Any, known: Sequence[str]) -> str:
    if app.pluginmanager.is_blocked(str(name)):
        return (
            f"pattern {name!r} comes from plugin {name!r}, which is blocked "
            f"({app.pluginmanager.blocked()[str(name)]})"
        )
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown pattern {name!r} (known: {', '.join(sorted(known)) or 'none'}){hint}"


def build_policies(app: wisp.Wisp) -> dict[str, Policy]:
    """Every named policy, built once; every problem reported together."""
    kinds = _kinds(app)
    by_class = {kind.config_class: kind for kind, _ in kinds.values()}
    config: ResilienceConfig = app.config.section(ResilienceConfig)
    declared: dict[str, tuple[str, Sequence[Any]]] = {}
    for plugin, result in app.pluginmanager.results("wisp_resilience_policies", app=app):
        for name, steps in (result or {}).items():
            declared[name] = (f"wisp_resilience_policies of plugin {plugin!r}", steps)
    for name, steps in config.policies.items():
        declared[name] = ("config", steps)
    problems: list[str] = []
    wrappers: list[Any] = []
    for plugin, result in app.pluginmanager.results("wisp_resilience_wrappers", app=app):
        for wrap in result or ():
            if not callable(wrap):
                problems.append(
                    f"plugin {plugin!r} returned {wrap!r} from wisp_resilience_wrappers; "
                    "expected a callable wrap(policy, call) -> call"
                )
            else:
                wrappers.append(wrap)
    policies: dict[str, Policy] = {}
    for name, (origin, steps) in sorted(declared.items()):
        patterns: list[Pattern] = []
        for i, step in enumerate(steps):
            where = f"resilience.policies.{name}[{i}]"
            if origin != "config":
                where += f" (from {origin})"
            if isinstance(step, PatternConfig):
                found = by_class.get(type(step))
                if found is None:
                    problems.append(f"{where}: no enabled plugin provides {type(step).__name__}")
                    continue
                patterns.append(found.factory(step, policy=name))
                continue
            if not isinstance(step, Mapping) or "pattern" not in step:
                problems.append(f"{where}: a step is a table with a `pattern` key, got {step!r}")
                continue
            kind_name = step["pattern"]
            if kind_name not in kinds:
                problems.append(f"{where}.pattern: {_unknown_kind(app, kind_name, list(kinds))}")
                continue
            kind = kinds[kind_name][0]
            raw = {k: v for k, v in step.items() if k != "pattern"}
            value, sub = app.config.structure_part(
                "resilience", ("policies", f"{name}[{i}]"), kind.config_class, raw
            )
            if value is None:
                problems.extend(f"{p} (pattern {kind_name})" for p in sub)
                continue
            patterns.append(kind.factory(value, policy=name))
        if not steps:
            problems.append(f"resilience.policies.{name}: a policy needs at least one step")
        policies[name] = Policy(name, patterns, wrappers=wrappers)
    if problems:
        raise wisp.ConfigError(problems)
    return policies


class ResilienceService(wisp.BaseService):
    """The named policies, their shared state, and the event hook."""

    name = "resilience"
    after = ("redis",)

    def __init__(self, app: wisp.Wisp, policies: dict[str, Policy]) -> None:
        super().__init__()
        self.app = app
        self.policies = policies
        self._forward: Any = None

    def policy(self, name: str) -> Policy:
        """The policy called ``name``; a KeyError lists the known ones."""
        try:
            return self.policies[name]
        except KeyError:
            known = ", ".join(sorted(self.policies)) or "none"
            raise KeyError(f"no resilience policy {name!r} (known: {known})") from None

    def patterns(self) -> list[Pattern]:
        return [p for policy in self.policies.values() for p in policy.patterns]

    async def start(self) -> None:
        started: list[Pattern] = []
        try:
            for pattern in self.patterns():
                await pattern.start(self.app.services)
                started.append(pattern)
        except BaseException:
            for pattern in reversed(started):
                await pattern.stop()
            raise
        if self.app.pluginmanager.hook.wisp_resilience_event.get_hookimpls():
            hook = self.app.pluginmanager.hook.wisp_resilience_event

            def forward(event: ResilienceEvent) -> None:
                hook(event=event)

            self._forward = forward
            global_bus.add_listener(forward)
        await super().start()

    async def stop(self) -> None:
        if self._forward is not None:
            global_bus.remove_listener(self._forward)
            self._forward = None
        for pattern in reversed(self.patterns()):
            await pattern.stop()
        await super().stop()

    def status(self) -> dict[str, list[dict[str, Any]]]:
        return {name: policy.status() for name, policy in sorted(self.policies.items())}


_service = wisp.StashKey[ResilienceService]()


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"resilience": ResilienceConfig}


@wisp.hookimpl
def wisp_configure(app: wisp.Wisp) -> None:
    app.stash[_service] = ResilienceService(app, build_policies(app))


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> wisp.Service:
    return app.stash[_service]


def _priority(target: Target) -> int | None:
    value = target.metadata.get("priority")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise wisp.ConfigError(
            [f"command {target.name!r} metadata priority: expected an integer, got {value!r}"]
        )
    return value


@wisp.hookimpl
def wisp_middleware(app: wisp.Wisp, target: Target) -> wisp.Middleware | None:
    name = target.metadata.get("resilience")
    level = _priority(target)
    if name is None and level is None:
        return None
    service = app.stash[_service]
    if name is not None and name not in service.policies:
        known = ", ".join(sorted(service.policies)) or "none"
        raise wisp.ConfigError(
            [
                f"command {target.name!r} (plugin {target.plugin}) metadata resilience: "
                f"no policy {name!r} (known: {known})"
            ]
        )
    policy = service.policies[name] if name is not None else None
    bound: list[tuple[AsyncFn, AsyncFn]] = []  # (call_next, the policy around it)

    async def resilience(ctx: wisp.WispContext, call_next: wisp.CallNext) -> Any:
        token = current_priority.set(level) if level is not None else None
        try:
            if policy is None:
                return await call_next(ctx)
            if not bound or bound[0][0] is not call_next:
                bound[:] = [(call_next, policy.bind(call_next))]
            return await bound[0][1](ctx)
        finally:
            if token is not None:
                current_priority.reset(token)

    return wisp.Middleware("resilience", resilience, wisp.Order.RESILIENCE)


@wisp.hookimpl
def wisp_capabilities() -> list[wisp.Capability]:
    return [
        wisp.Capability(
            "resilience.view", "See resilience policies, breaker states and counters.", "deny"
        )
    ]


def _format(status: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = []
    for name, patterns in status.items():
        lines.append(f"{name}:")
        for p in patterns:
            details = {k: v for k, v in p.items() if k not in ("pattern", "name", "state")}
            shown = " ".join(f"{k}={v}" for k, v in details.items())
            lines.append(f"  {p['pattern']:<15} {p.get('state', '-'):<12} {shown}")
    return lines


@wisp.command(
    name="resilience status",
    capability="resilience.view",
    description="Resilience policies in this process: states and counters.",
)
async def resilience_status(ctx: wisp.WispContext) -> wisp.Response:
    lines = _format(ctx.app.stash[_service].status())
    return wisp.Response("\n".join(lines) or "No resilience policies.", ephemeral=True)


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser("status", help="every policy: pattern states and counters")
    s.add_argument("--json", action="store_true", help="one JSON document")


async def _run(app: wisp.Wisp, args: argparse.Namespace) -> int:
    status = app.stash[_service].status()
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True, default=str))
        return 0
    lines = _format(status)
    if not lines:
        print("no resilience policies: add [[resilience.policies.NAME]] steps", file=sys.stderr)
    for line in lines:
        print(line)
    return 0


@wisp.hookimpl
def wisp_cli_commands() -> list[wisp.CliCommand]:
    return [
        wisp.CliCommand(
            "resilience",
            "resilience policies: status (shared breakers show their Redis state)",
            _run,
            _args,
            start=True,
        )
    ]
