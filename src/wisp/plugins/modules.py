"""Legacy modules: Wisp 1.x's ``Module`` API, run unchanged on the Wisp bot.

A module is an object with ``name``, optional ``default_enabled``,
``required_services`` and ``depends_on``, and ``async setup(bot, ctx)`` /
``teardown(bot, ctx)``; it registers discord.py commands and listeners on the
bot itself.  List modules in ``[modules] load`` (``package.module:Class``, or
``package.module`` for every :class:`Module` subclass defined there).  They are
set up in dependency order once the bot is connected and torn down before it
stops; a module whose dependency or required service is missing is skipped,
and says so.  Bundled plugin ``modules``; block it with ``-p no:modules``.
"""

from __future__ import annotations

import abc
import graphlib
import importlib
import inspect
from collections.abc import Sequence
from typing import Any

import attrs
from loguru import logger

import wisp

__all__ = ["Module", "ModuleContext", "ModulesConfig"]


WISP_PLUGIN = wisp.PluginMetadata(
    name="modules",
    description="Wisp 1.x modules, run unchanged on the Wisp bot.",
    api=">=1.0,<2",
    data="Nothing itself; what a legacy module stores is that module's business.",
)


class Module(abc.ABC):
    """The 1.x module base class (subclassing it is optional: duck typing works)."""

    @property
    @abc.abstractmethod
    def name(self) -> str: ...

    @property
    def default_enabled(self) -> bool:
        return True

    @property
    def required_services(self) -> set[str]:
        return set()

    @property
    def depends_on(self) -> list[str]:
        return []

    @abc.abstractmethod
    async def setup(self, bot: Any, ctx: ModuleContext) -> None: ...

    async def teardown(self, bot: Any, ctx: ModuleContext) -> None:
        return None


@attrs.frozen
class ModulesConfig:
    """``[modules]``: which legacy modules to load."""

    load: list[str] = attrs.field(factory=list)


class _Services:
    """1.x-style service access: ``ctx.services.get("db")`` is ``None`` when absent."""

    def __init__(self, app: wisp.Wisp) -> None:
        self._app = app

    def get(self, name: str) -> Any:
        return self._app.services.get(name) if name in self._app.services else None

    def __contains__(self, name: str) -> bool:
        return name in self._app.services


class ModuleContext:
    """What a module's ``setup`` receives as ``ctx`` (the 1.x BotContext's role)."""

    def __init__(self, app: wisp.Wisp, module: Any) -> None:
        self.app = app
        self.module = module
        self.config = app.config
        self.services = _Services(app)
        self.logger = logger.bind(module=module.name)
        data = self.services.get("guild_data")
        #: Per-guild key/value storage in the module's namespace (None without storage).
        self.guild_data = data.namespace(module.name) if data is not None else None

    async def is_enabled(self, guild_id: int) -> bool:
        """The module's per-guild switch (``plugin_state`` as ``module:NAME``)."""
        states = self.services.get("plugin_state")
        default = bool(getattr(self.module, "default_enabled", True))
        if states is None:
            return default
        status = await states.get(f"module:{self.module.name}", guild_id)
        return status.enabled if status.stored else default


def _load(spec: str) -> list[Any]:
    modname, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(modname)
    except Exception as exc:
        raise wisp.PluginError(
            f"[modules] load: cannot import {modname!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if attr:
        cls = getattr(module, attr, None)
        if cls is None:
            raise wisp.PluginError(f"[modules] load: {modname!r} has no {attr!r}")
        return [cls() if inspect.isclass(cls) else cls]
    found = [
        obj()
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Module)
        and obj is not Module
        and not inspect.isabstract(obj)
        and obj.__module__ == module.__name__
    ]
    if not found:
        raise wisp.PluginError(f"[modules] load: {modname!r} defines no Module subclass")
    return found


_loaded = wisp.StashKey[list[tuple[Any, ModuleContext]]]()


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"modules": ModulesConfig}


@wisp.hookimpl
def wisp_configure(app: wisp.Wisp) -> None:
    app.stash[_loaded] = []


def order(modules: Sequence[Any]) -> tuple[list[Any], list[str]]:
    """Modules in dependency order, and why any were left out."""
    by_name = {m.name: m for m in modules}
    skipped: list[str] = []
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for m in modules:
        sorter.add(m.name, *[d for d in getattr(m, "depends_on", []) if d in by_name])
    try:
        names = list(sorter.static_order())
    except graphlib.CycleError as exc:
        raise wisp.PluginError(
            f"[modules]: modules depend on each other in a cycle: {exc.args[1]}"
        ) from None
    ready: list[Any] = []
    ok: set[str] = set()
    for name in names:
        m = by_name[name]
        missing = [d for d in getattr(m, "depends_on", []) if d not in ok]
        if missing:
            skipped.append(
                f"module {name!r} needs module(s) {', '.join(missing)}, which are not loaded"
            )
            continue
        ok.add(name)
        ready.append(m)
    return ready, skipped


@wisp.hookimpl
async def wisp_startup(app: wisp.Wisp) -> None:
    config: ModulesConfig = app.config.section(ModulesConfig)
    if not config.load:
        return
    if "discord" not in app.services:
        logger.debug("legacy modules wait for the bot: not set up outside `wisp run`")
        return
    discord_service = app.services.get("discord")
    modules = [m for spec in config.load for m in _load(spec)]
    ready, skipped = order(modules)
    for reason in skipped:
        logger.warning("{}; skipped", reason)
    done: set[str] = set()
    for module in ready:
        missing = sorted(
            s for s in getattr(module, "required_services", set()) if s not in app.services
        )
        needs = [d for d in getattr(module, "depends_on", []) if d not in done]
        if missing or needs:
            logger.warning(
                "module {!r} skipped: {}",
                module.name,
                f"services {', '.join(missing)} unavailable"
                if missing
                else f"module(s) {', '.join(needs)} skipped",
            )
            continue
        ctx = ModuleContext(app, module)
        await module.setup(discord_service.bot, ctx)
        app.stash[_loaded].append((module, ctx))
        done.add(module.name)
        logger.info("legacy module {!r} set up", module.name)
    await discord_service.sync()  # the modules' own slash commands, if any changed


@wisp.hookimpl
async def wisp_shutdown(app: wisp.Wisp) -> None:
    loaded = app.stash.get(_loaded, [])
    bot = app.services.get("discord").bot if "discord" in app.services else None
    while loaded:
        module, ctx = loaded.pop()
        try:
            await module.teardown(bot, ctx)
        except Exception:
            logger.exception("legacy module {!r} failed to tear down", module.name)
