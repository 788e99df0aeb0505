"""A typed facade over ``pluggy.PluginManager`` that isolates broken plugins.

Discovery runs in a fixed order (see :meth:`WispPluginManager.load`).  A plugin
that fails to import, register or validate is recorded as a
:class:`PluginFailure` naming the plugin, its distribution and the cause, and
is left out; every other plugin still loads.

Call order: pluggy calls ``tryfirst`` implementations first, ``trylast`` last,
and within each class the plugin registered *last* first.  Registration order
never depends on how the environment lists entry points: entry points sorted
by name, then ``-p`` plugins in the order given, then ``WISP_PLUGINS``, then
``[wisp] plugins``, then local files: the project's ``wispconf.py``, then each
of ``[wisp] command_paths`` in the order listed, walked top-down (in each
folder its ``wispconf.py``, then its command files by name, then its
subfolders by name).  So a ``wispconf.py`` overrides an installed plugin, and a
deeper one overrides a shallower one.

Wisp calls kernel hooks one implementation at a time (to compile them into
plain calls, or to name the plugin whose implementation failed), so pluggy
wrappers are not supported on them: order with ``tryfirst``/``trylast``, wrap
runtime work with middleware.
"""

from __future__ import annotations

import difflib
import enum
import importlib
import inspect
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import importlib_metadata
import pluggy
from loguru import logger

from wisp import hookspecs
from wisp.errors import ConfigError, PluginError
from wisp.markers import PROJECT
from wisp.metadata import (
    PLUGIN_API_VERSION,
    PluginMetadata,
    WispDeprecationWarning,
    normalize,
    parse_requirement,
    read_metadata,
)

__all__ = ["Origin", "PluginFailure", "PluginInfo", "WispPluginManager"]

#: Hooks compiled into plain calls or awaited on every invocation or at start-up.
RUNTIME_HOOKS = frozenset(
    {
        "wisp_make_context",
        "wisp_enrich_context",
        "wisp_policy_decide",
        "wisp_error_message",
        "wisp_startup",
        "wisp_shutdown",
        "wisp_run",
        "wisp_resilience_event",
    }
)
#: Hooks a nested ``wispconf.py`` receives only for targets under its directory.
SCOPED_HOOKS = frozenset(
    {
        "wisp_enrich_context",
        "wisp_middleware",
        "wisp_policy_decide",
        "wisp_ratelimit_buckets",
        "wisp_error_message",
    }
)

BUNDLED_DISTRIBUTION = "wisp-framework"
WISPCONF = "wispconf.py"


#: Every hook the kernel specifies.
KERNEL_HOOKS = frozenset(
    n for n in dir(hookspecs) if n.startswith("wisp_") and callable(getattr(hookspecs, n))
)


class Origin(enum.StrEnum):
    """Where a plugin came from."""

    BUNDLED = "bundled"
    THIRD_PARTY = "third-party"
    CMDLINE = "-p"
    ENV = "WISP_PLUGINS"
    CONFIG = "wisp.toml"
    WISPCONF = "wispconf"
    LOCAL = "command file"
    API = "api"


@attrs.define
class PluginInfo:
    """A registered plugin and where it came from."""

    name: str
    plugin: object
    origin: Origin
    distribution: str | None = None
    version: str | None = None
    path: Path | None = None
    #: For a ``wispconf.py``: the directory it governs.
    scope: Path | None = None
    #: Its ``WISP_PLUGIN`` record, if it has one.
    metadata: PluginMetadata | None = None
    #: The entry point's value or the module imported (``-p``, command files).
    source: str | None = None
    #: Milliseconds spent importing it (``None``: registered as an object).
    import_ms: float | None = None

    @property
    def dist_label(self) -> str:
        if self.distribution:
            return f"{self.distribution} {self.version or ''}".strip()
        return "-"

    @property
    def plugin_version(self) -> str | None:
        """The record's version, else the distribution's."""
        if self.metadata is not None and self.metadata.version:
            return self.metadata.version
        return self.version

    def label(self) -> str:
        """Who this is, for errors naming both sides of a clash."""
        where = self.dist_label if self.distribution else (str(self.path) if self.path else None)
        parts = [p for p in (where, self.origin.value, self.source) if p]
        return ", ".join(parts)


@attrs.frozen
class PluginFailure:
    """A plugin that was left out, and why."""

    name: str
    origin: Origin
    stage: str
    message: str
    distribution: str | None = None
    version: str | None = None
    path: Path | None = None
    import_ms: float | None = None

    @property
    def status(self) -> str:
        """``incompatible`` for a plugin API mismatch, else ``broken``."""
        return "incompatible" if self.stage == "compatibility" else "broken"

    def describe(self) -> str:
        where = (
            f"{self.distribution} {self.version or ''}".strip()
            if self.distribution
            else (str(self.path) if self.path else None)
        )
        label = f"{where}, {self.origin.value}" if where else self.origin.value
        return f"plugin {self.name!r} ({label}) failed at {self.stage}: {self.message}"


@attrs.frozen
class _EntryPoint:
    name: str
    value: str
    distribution: str | None
    version: str | None
    load: Callable[[], object]
    #: The distribution's ``Requires-Dist`` lines, read only when needed.
    requires: Callable[[], list[str] | None] = lambda: None


def _normalize(dist: str | None) -> str | None:
    return dist.lower().replace("_", "-").replace(".", "-") if dist else None


def _requires_of(dist: Any) -> Callable[[], list[str] | None]:
    def read() -> list[str] | None:
        return None if dist is None else list(dist.requires or ())

    return read


def _entry_points() -> list[_EntryPoint]:
    out = []
    for ep in importlib_metadata.entry_points(group=PROJECT):
        dist = ep.dist
        out.append(
            _EntryPoint(
                ep.name,
                ep.value,
                dist.metadata["Name"] if dist is not None else None,
                dist.version if dist is not None else None,
                ep.load,
                _requires_of(dist),
            )
        )
    # Scan order is the environment's business; ours is by name, then distribution.
    out.sort(key=lambda e: (e.name, _normalize(e.distribution) or ""))
    return out


def error_summary(exc: BaseException, path: Path | None = None) -> str:
    """One line: the exception, and the file and line it came from."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    frame = None
    if path is not None:
        frame = next((f for f in reversed(frames) if Path(f.filename) == path), None)
    if frame is None and frames:
        frame = frames[-1]
    where = f" ({frame.filename}, line {frame.lineno})" if frame is not None else ""
    return f"{type(exc).__name__}: {exc}{where}"


class WispPluginManager:
    """Registers plugins for project ``wisp`` and keeps track of origins and failures."""

    def __init__(self, *, trace: bool = False) -> None:
        self._pm = pluggy.PluginManager(PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._infos: dict[str, PluginInfo] = {}
        self._blocked: dict[str, str] = {}
        self.failures: list[PluginFailure] = []
        #: Start-up errors naming both sides: two plugins, commands or sections with one name.
        self.collisions: list[str] = []
        #: Entry points of group ``wisp``, scanned once by :meth:`load`.
        self.entry_points: dict[str, _EntryPoint] = {}
        self.tracing = False
        self._subset_cache: dict[tuple[str, frozenset[str]], pluggy.HookCaller] = {}
        self._pm.hook.wisp_addhooks.call_historic(kwargs={"pluginmanager": self})
        if trace:
            self.enable_tracing()

    # -- the pluggy surface ---------------------------------------------------

    @property
    def hook(self) -> pluggy.HookRelay:
        return self._pm.hook

    @property
    def pluggy_manager(self) -> pluggy.PluginManager:
        return self._pm

    def add_hookspecs(self, module_or_class: ModuleType | type) -> None:
        """Add hook specs; plugins already implementing them badly are dropped first."""
        for name in dir(module_or_class):
            if self._pm.parse_hookspec_opts(module_or_class, name) is None:
                continue
            caller: pluggy.HookCaller | None = getattr(self._pm.hook, name, None)
            if caller is None or caller.spec is not None:
                continue
            spec_args = set(inspect.signature(getattr(module_or_class, name)).parameters)
            spec_args.discard("self")
            for impl in list(caller.get_hookimpls()):
                extra = set(impl.argnames) - spec_args
                if extra:
                    self._fail(
                        impl.plugin_name,
                        "validate",
                        f"hook {name!r} implementation takes {sorted(extra)}, which the "
                        f"spec does not offer (spec: {sorted(spec_args)})",
                    )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self._pm.add_hookspecs(module_or_class)
        self._rewarn(caught)
        # Plugins registered before the spec was added use it only now.
        for name in dir(module_or_class):
            caller = getattr(self._pm.hook, name, None)
            if isinstance(caller, pluggy.HookCaller) and caller.spec is not None:
                for impl in list(caller.get_hookimpls()):
                    try:
                        self._warn_deprecated(impl.plugin_name, caller, impl)
                    except Warning as exc:  # warnings turned into errors
                        self._fail(impl.plugin_name, "validate", str(exc))

    # -- registration ---------------------------------------------------------

    def block(self, name: str, reason: str) -> None:
        """Never register ``name``; unregister it if it is registered."""
        self._blocked.setdefault(name, reason)
        self._pm.set_blocked(name)
        self._infos.pop(name, None)

    def blocked(self) -> Mapping[str, str]:
        """Blocked names and how each was blocked."""
        return dict(self._blocked)

    def is_blocked(self, name: str) -> bool:
        return name in self._blocked

    def register(
        self,
        plugin: object,
        name: str,
        origin: Origin = Origin.API,
        *,
        distribution: str | None = None,
        version: str | None = None,
        path: Path | None = None,
        scope: Path | None = None,
        source: str | None = None,
        import_ms: float | None = None,
    ) -> bool:
        """Register ``plugin``; return ``False`` if blocked or failed (failure recorded).

        Its ``WISP_PLUGIN`` record is read and its plugin API range checked
        first: an incompatible plugin is never registered, so none of its
        hooks run.  A name already taken is a collision, a start-up error.
        """
        if self.is_blocked(name):
            return False
        info = PluginInfo(
            name, plugin, origin, distribution, version, path, scope, None, source, import_ms
        )

        def fail(stage: str, message: str) -> bool:
            self.failures.append(
                PluginFailure(name, origin, stage, message, distribution, version, path, import_ms)
            )
            return False

        if name in self._infos:
            return fail("collision", self._collision(info))
        try:
            info.metadata = read_metadata(plugin)
        except Exception as exc:
            return fail("metadata", error_summary(exc, path))
        meta = info.metadata
        if meta is not None and not meta.supports(PLUGIN_API_VERSION):
            from wisp import __version__

            return fail(
                "compatibility",
                f"plugin {name!r} {info.plugin_version or ''} supports Wisp plugin API "
                f"{meta.api}, but wisp-framework {__version__} provides plugin API "
                f"{PLUGIN_API_VERSION}; it is not loaded".replace("  ", " "),
            )
        self._infos[name] = info
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self._pm.register(plugin, name)
            self._rewarn(caught)
            for caller in self._pm.get_hookcallers(plugin) or ():
                for impl in caller.get_hookimpls():
                    if impl.plugin is plugin:
                        self._warn_deprecated(name, caller, impl)
            self._pm.hook.wisp_plugin_registered.call_historic(
                kwargs={"plugin": plugin, "plugin_name": name, "manager": self}
            )
        except Exception as exc:
            self._infos.pop(name, None)
            if self._pm.get_plugin(name) is not None:
                self._pm.unregister(name=name)
            return fail("register", error_summary(exc, path))
        return True

    def _collision(self, info: PluginInfo) -> str:
        other = self._infos[info.name]
        message = (
            f"plugin name {info.name!r} is taken twice: by {other.label()} and by "
            f"{info.label()}; uninstall or rename one of them"
        )
        self.collisions.append(message)
        return message

    def _rewarn(self, caught: list[warnings.WarningMessage]) -> None:
        """Re-emit what pluggy warned, except the hook deprecations we name ourselves."""
        ours: set[int] = set()
        for caller in vars(self._pm.hook).values():
            spec = caller.spec if isinstance(caller, pluggy.HookCaller) else None
            if spec is not None:
                ours.update(
                    id(w) for w in (spec.warn_on_impl, *(spec.warn_on_impl_args or {}).values())
                )
        for w in caught:
            if id(w.message) not in ours:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def _warn_deprecated(
        self, plugin_name: str, caller: pluggy.HookCaller, impl: pluggy.HookImpl
    ) -> None:
        """Name the plugin (pluggy names only the function) in a hook deprecation."""
        spec = caller.spec
        if spec is None:
            return
        info = self._infos.get(plugin_name)
        who = f"plugin {plugin_name!r}" + (f" ({info.label()})" if info is not None else "")
        found: list[tuple[str, Warning]] = []
        if spec.warn_on_impl is not None:
            found.append((f"implements the deprecated hook {caller.name!r}", spec.warn_on_impl))
        for arg in (*impl.argnames, *impl.kwargnames):
            w = (spec.warn_on_impl_args or {}).get(arg)
            if w is not None:
                found.append((f"uses the deprecated argument {arg!r} of hook {caller.name!r}", w))
        for what, warning in found:
            message = f"{who} {what}: {warning}"
            logger.warning("{}", message)
            category = type(warning) if isinstance(warning, Warning) else WispDeprecationWarning
            warnings.warn(category(message), stacklevel=2)

    def unregister(self, name: str) -> None:
        self._infos.pop(name, None)
        if self._pm.get_plugin(name) is not None:
            self._pm.unregister(name=name)

    def _fail(self, name: str, stage: str, message: str) -> None:
        info = self._infos.get(name)
        if info is None:
            return
        self.failures.append(
            PluginFailure(
                name,
                info.origin,
                stage,
                message,
                info.distribution,
                info.version,
                info.path,
                info.import_ms,
            )
        )
        self.unregister(name)

    # -- discovery ------------------------------------------------------------

    def load(
        self,
        *,
        blocked: Iterable[tuple[str, str]] = (),
        autoload: bool = True,
        requested: Iterable[tuple[str, Origin]] = (),
        rootdir: Path | None = None,
        command_paths: Sequence[str] = (),
    ) -> None:
        """Discover and register plugins, in this order.

        1. ``blocked``: ``(name, reason)`` pairs are blocked first;
        2. every ``wisp`` entry point, unless ``autoload`` is false;
        3. ``requested`` plugins: entry-point names or dotted modules;
        4. local files: ``wispconf.py`` in ``rootdir`` and, under each of
           ``command_paths``, every ``wispconf.py`` and command file.

        The project directory goes on ``sys.path`` first, so ``-p mymodule``
        finds a module beside ``wisp.toml``.  Then every plugin is validated
        (:meth:`check`).
        """
        if rootdir is not None and str(rootdir.resolve()) not in sys.path:
            sys.path.insert(0, str(rootdir.resolve()))
        for name, reason in blocked:
            self.block(name, reason)
        eps = _entry_points()
        self.entry_points = {}
        for ep in eps:
            self.entry_points.setdefault(ep.name, ep)
        if autoload:
            for ep in eps:
                self._load_entry_point(ep)
        by_name = {ep.name: ep for ep in eps}
        tried: set[str] = set()
        for spec, origin in requested:
            if spec in self._infos or self.is_blocked(spec) or spec in tried:
                continue
            tried.add(spec)
            if spec in by_name:
                self._load_entry_point(by_name[spec], origin)
            else:
                self.import_plugin(spec, origin)
        if rootdir is not None:
            self.load_local(rootdir, command_paths)
        self.check()

    def _load_entry_point(self, ep: _EntryPoint, origin: Origin | None = None) -> None:
        if self.is_blocked(ep.name):
            return
        if origin is None:
            bundled = _normalize(ep.distribution) == BUNDLED_DISTRIBUTION
            origin = Origin.BUNDLED if bundled else Origin.THIRD_PARTY
        if ep.name in self._infos:
            # Not imported: its code must not run under a name another plugin holds.
            info = PluginInfo(ep.name, None, origin, ep.distribution, ep.version, source=ep.value)
            self.failures.append(
                PluginFailure(
                    ep.name,
                    origin,
                    "collision",
                    self._collision(info),
                    ep.distribution,
                    ep.version,
                )
            )
            return
        if origin is not Origin.BUNDLED and (why := _framework_mismatch(ep)) is not None:
            # Caught before the import: none of the plugin's code runs.
            self.failures.append(
                PluginFailure(ep.name, origin, "compatibility", why, ep.distribution, ep.version)
            )
            return
        start = time.perf_counter()
        try:
            plugin = ep.load()
        except Exception as exc:
            self.failures.append(
                PluginFailure(
                    ep.name,
                    origin,
                    "import",
                    f"entry point {ep.value!r}: {error_summary(exc)}",
                    ep.distribution,
                    ep.version,
                )
            )
            return
        self.register(
            plugin,
            ep.name,
            origin,
            distribution=ep.distribution,
            version=ep.version,
            path=_module_path(plugin),
            source=ep.value,
            import_ms=(time.perf_counter() - start) * 1000,
        )

    def import_plugin(self, modname: str, origin: Origin = Origin.CMDLINE) -> None:
        """Import a dotted module and register it under that name."""
        start = time.perf_counter()
        try:
            module = importlib.import_module(modname)
        except Exception as exc:
            self.failures.append(PluginFailure(modname, origin, "import", error_summary(exc)))
            return
        took = (time.perf_counter() - start) * 1000
        self.register(
            module, modname, origin, path=_module_path(module), source=modname, import_ms=took
        )

    def load_local(self, rootdir: Path, command_paths: Sequence[str]) -> None:
        """Register the project's ``wispconf.py`` files and command files."""
        rootdir = rootdir.resolve()
        if str(rootdir) not in sys.path:
            sys.path.insert(0, str(rootdir))
        files: list[tuple[Path, Origin]] = []
        if (rootdir / WISPCONF).is_file():
            files.append((rootdir / WISPCONF, Origin.WISPCONF))
        for rel in command_paths:
            folder = (rootdir / rel).resolve()
            if not folder.is_dir():
                self.failures.append(
                    PluginFailure(
                        rel,
                        Origin.LOCAL,
                        "import",
                        f"command path {str(folder)!r} (from [wisp] command_paths) "
                        "is not a directory",
                        path=folder,
                    )
                )
                continue
            files.extend(_local_files(folder))
        for path, origin in files:
            self._load_local_file(rootdir, path, origin)

    def _load_local_file(self, rootdir: Path, path: Path, origin: Origin) -> None:
        try:
            rel = path.relative_to(rootdir)
        except ValueError:
            self.failures.append(
                PluginFailure(
                    str(path),
                    origin,
                    "import",
                    f"{path} is outside the project directory {rootdir}",
                    path=path,
                )
            )
            return
        name = rel.as_posix()
        if name in self._infos or self.is_blocked(name):
            return
        modname = ".".join(rel.with_suffix("").parts)
        start = time.perf_counter()
        try:
            module = importlib.import_module(modname)
        except Exception as exc:
            sys.modules.pop(modname, None)
            self.failures.append(
                PluginFailure(name, origin, "import", error_summary(exc, path), path=path)
            )
            return
        found = _module_path(module)
        if found != path:
            self.failures.append(
                PluginFailure(
                    name,
                    origin,
                    "import",
                    f"module name {modname!r} resolves to {found}, not {path}: rename the "
                    "folder or file so it does not clash with an installed package",
                    path=path,
                )
            )
            return
        scope = path.parent if origin is Origin.WISPCONF else None
        took = (time.perf_counter() - start) * 1000
        if not self.register(
            module, name, origin, path=path, scope=scope, source=modname, import_ms=took
        ):
            return
        if origin is Origin.LOCAL and (hooks := self.hooks_of(name)):
            # A command file's hooks would apply to every command, after every
            # wispconf.py: hooks belong in a wispconf.py, which is scoped.
            self._fail(
                name,
                "validate",
                f"command files hold commands and event handlers; move the hook "
                f"implementation(s) {', '.join(hooks)} to a wispconf.py "
                f"(in {path.parent}) to scope them to this folder",
            )

    def check(self) -> None:
        """Validate every plugin: requirements first (the root cause when a plugin a
        dependent adds hooks for is blocked), then known hooks only and no wrappers
        on kernel hooks."""
        self._check_requirements()
        for hookname, caller in sorted(vars(self._pm.hook).items()):
            if not isinstance(caller, pluggy.HookCaller):
                continue
            for impl in list(caller.get_hookimpls()):
                if caller.spec is None and not impl.optionalhook:
                    known = [
                        n
                        for n, c in vars(self._pm.hook).items()
                        if isinstance(c, pluggy.HookCaller) and c.spec is not None
                    ]
                    near = difflib.get_close_matches(hookname, known, n=1, cutoff=0.85)
                    hint = (
                        f"; did you mean {near[0]!r}?"
                        if near
                        else " (mark it optionalhook=True if another plugin may add it)"
                    )
                    self._fail(impl.plugin_name, "validate", f"unknown hook {hookname!r}{hint}")
                elif hookname in KERNEL_HOOKS and (impl.wrapper or impl.hookwrapper):
                    why = (
                        "it is compiled into plain calls and pluggy wrappers cannot wrap "
                        "coroutines: use middleware"
                        if hookname in RUNTIME_HOOKS
                        else "Wisp calls each implementation itself: order with "
                        "tryfirst/trylast instead"
                    )
                    self._fail(
                        impl.plugin_name,
                        "validate",
                        f"hook {hookname!r} does not take pluggy wrappers; {why}",
                    )

    def _check_requirements(self) -> None:
        changed = True
        while changed:
            changed = False
            for info in list(self._infos.values()):
                for req in _requires(info):
                    why = self.unmet(req)
                    if why is None:
                        continue
                    self._fail(
                        info.name,
                        "requires",
                        f"plugin {info.name!r} requires plugin {req!r}, {why}",
                    )
                    changed = True
                    break

    def find(self, name: str) -> PluginInfo | None:
        """The registered plugin called ``name``, or whose distribution is ``name``."""
        if name in self._infos:
            return self._infos[name]
        key = normalize(name)
        for info in self._infos.values():
            if normalize(info.name) == key:
                return info
        for info in self._infos.values():
            if info.distribution and normalize(info.distribution) == key:
                return info
        return None

    def unmet(self, requirement: str) -> str | None:
        """Why ``requirement`` (``name`` or ``name>=1.2``) is not met, or ``None``."""
        try:
            req = parse_requirement(requirement, "requirement")
        except ValueError:
            # `wisp_requires` may name a local file ("bot/hello.py"): an exact name.
            if requirement in self._infos:
                return None
            if requirement in self._blocked:
                return f"which is blocked ({self._blocked[requirement]})"
            if any(f.name == requirement for f in self.failures):
                return "which failed to load"
            return "which is not installed or not loaded"
        info = self.find(req.name)
        if info is None:
            key = normalize(req.name)
            if any(normalize(n) == key for n in self._blocked):
                name = next(n for n in self._blocked if normalize(n) == key)
                return f"which is blocked ({self._blocked[name]})"
            if any(
                normalize(f.name) == key or normalize(f.distribution or "") == key
                for f in self.failures
            ):
                return "which failed to load"
            return "which is not installed or not loaded"
        if not req.specifier:
            return None
        version = info.plugin_version
        if version is None:
            return f"but plugin {info.name!r} has no version"
        if not req.specifier.contains(version, prereleases=True):
            return f"but plugin {info.name!r} ({info.label()}) is version {version}"
        return None

    def check_required(self, required: Sequence[str], where: str) -> str | None:
        """One message for every unmet ``[wisp] required_plugins`` entry, or ``None``."""
        problems = [f"{r!r}, {why}" for r in required if (why := self.unmet(r)) is not None]
        if not problems:
            return None
        return f"required plugins ({where}) are missing or do not match:\n" + "\n".join(
            "  - " + p for p in problems
        )

    def intents(self) -> dict[str, list[str]]:
        """Every gateway intent enabled plugins declare, with the plugins needing it."""
        out: dict[str, list[str]] = {}
        for info in self._infos.values():
            for intent in info.metadata.intents if info.metadata else ():
                out.setdefault(intent, []).append(info.name)
        return dict(sorted(out.items()))

    # -- introspection --------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """Registered plugins in registration order."""
        return list(self._infos.values())

    def info(self, name: str) -> PluginInfo:
        return self._infos[name]

    def has_plugin(self, name: str) -> bool:
        """Whether a plugin of that name is registered (not blocked, not broken)."""
        return name in self._infos

    def name_of(self, plugin: object) -> str | None:
        return self._pm.get_name(plugin)

    def hooks_of(self, name: str) -> list[str]:
        """Names of the hooks plugin ``name`` implements."""
        plugin = self._pm.get_plugin(name)
        callers = self._pm.get_hookcallers(plugin) if plugin is not None else None
        return sorted(c.name for c in callers or ())

    def impls_in_call_order(self, caller: pluggy.HookCaller) -> list[pluggy.HookImpl]:
        """The implementations pluggy would call, first to last (wrappers excluded)."""
        return [i for i in reversed(caller.get_hookimpls()) if not (i.wrapper or i.hookwrapper)]

    def results(self, hookname: str, **kwargs: Any) -> Iterator[tuple[str, Any]]:
        """Call each implementation in call order; yield (plugin name, non-None result).

        An exception becomes a :class:`PluginError` naming the plugin, its
        distribution and the hook, so a crash in set-up says whose it is.
        """
        caller: pluggy.HookCaller = getattr(self._pm.hook, hookname)
        for impl in self.impls_in_call_order(caller):
            start = time.perf_counter_ns()
            try:
                result = impl.function(*[kwargs[a] for a in impl.argnames])
            except ConfigError:
                raise  # it names the bad key itself
            except Exception as exc:
                raise self.blame(impl.plugin_name, hookname, exc) from exc
            if self.tracing:
                took = (time.perf_counter_ns() - start) / 1000
                logger.debug("trace hook {} [{}] {:.1f}us", hookname, impl.plugin_name, took)
            if result is not None:
                yield impl.plugin_name, result

    def blame(self, plugin_name: str, hookname: str, exc: BaseException) -> PluginError:
        """A :class:`PluginError` saying which plugin's hook raised what."""
        info = self._infos.get(plugin_name)
        where = f" ({info.dist_label}, {info.origin.value})" if info is not None else ""
        return PluginError(
            f"plugin {plugin_name!r}{where} failed in {hookname}: {error_summary(exc)}"
        )

    def hook_table(self) -> Iterator[tuple[str, list[pluggy.HookImpl]]]:
        """Every hook with at least one implementation, and its call order."""
        for hookname, caller in sorted(vars(self._pm.hook).items()):
            if isinstance(caller, pluggy.HookCaller) and caller.get_hookimpls():
                yield hookname, list(reversed(caller.get_hookimpls()))

    def wispconfs(self) -> list[PluginInfo]:
        return [i for i in self._infos.values() if i.origin is Origin.WISPCONF]

    def scoped(self, hookname: str, source: Path | None, rootdir: Path | None) -> pluggy.HookCaller:
        """The hook as seen by a target defined in ``source``.

        A nested ``wispconf.py`` applies only when ``source`` lies under its
        directory; the project-root one applies to every target.
        """
        caller: pluggy.HookCaller = getattr(self._pm.hook, hookname)
        if hookname not in SCOPED_HOOKS:
            return caller
        remove = frozenset(
            i.name
            for i in self.wispconfs()
            if i.scope is not None
            and i.scope != rootdir
            and (source is None or not source.is_relative_to(i.scope))
        )
        if not remove:
            return caller
        key = (hookname, remove)
        if key not in self._subset_cache:
            plugins = [self._infos[n].plugin for n in remove]
            self._subset_cache[key] = self._pm.subset_hook_caller(hookname, plugins)
        return self._subset_cache[key]

    # -- tracing --------------------------------------------------------------

    def enable_tracing(self) -> None:
        """Log every pluggy hook call with its duration (``WISP_TRACE=1``)."""
        starts: list[int] = []

        def before(
            hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]
        ) -> None:
            starts.append(time.perf_counter_ns())

        def after(
            outcome: Any,
            hook_name: str,
            impls: Sequence[pluggy.HookImpl],
            kwargs: Mapping[str, Any],
        ) -> None:
            took = (time.perf_counter_ns() - starts.pop()) / 1000
            if not impls:
                return
            names = ", ".join(i.plugin_name for i in reversed(impls))
            logger.debug("trace hook {} [{}] {:.1f}us", hook_name, names, took)

        self._pm.add_hookcall_monitoring(before, after)
        self.tracing = True


def _requires(info: PluginInfo) -> tuple[str, ...]:
    """``wisp_requires`` (names, the older form) and the record's ``requires``."""
    req = getattr(info.plugin, "wisp_requires", ())
    out = (req,) if isinstance(req, str) else tuple(req)
    if info.metadata is not None:
        out += tuple(r for r in info.metadata.requires if r not in out)
    return out


def _framework_mismatch(ep: _EntryPoint) -> str | None:
    """Why the plugin's distribution cannot run on this wisp-framework, or ``None``."""
    from packaging.requirements import InvalidRequirement, Requirement

    from wisp import __version__

    for line in ep.requires() or ():
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if normalize(req.name) != BUNDLED_DISTRIBUTION or req.marker is not None:
            continue
        if not req.specifier.contains(__version__, prereleases=True):
            return (
                f"plugin {ep.name!r} {ep.version or ''} requires wisp-framework"
                f"{req.specifier}, but wisp-framework {__version__} is installed; "
                "it is not loaded"
            ).replace("  ", " ")
    return None


def _module_path(plugin: object) -> Path | None:
    file = getattr(plugin, "__file__", None)
    if file is None and not isinstance(plugin, ModuleType):
        file = getattr(sys.modules.get(type(plugin).__module__), "__file__", None)
    return Path(file).resolve() if file else None


def _local_files(folder: Path) -> list[tuple[Path, Origin]]:
    """``wispconf.py`` and command files under ``folder``, parents before children."""
    out: list[tuple[Path, Origin]] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        here = Path(dirpath)
        if WISPCONF in filenames:
            out.append((here / WISPCONF, Origin.WISPCONF))
        for fn in sorted(filenames):
            if fn.endswith(".py") and fn != WISPCONF and not fn.startswith(("_", "test_")):
                out.append((here / fn, Origin.LOCAL))
    return out
