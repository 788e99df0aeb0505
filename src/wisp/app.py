"""The application: loads plugins and config, compiles targets, runs the lifecycle.

``Wisp`` goes through four states.  *bootstrap* discovers and registers
plugins (tolerating broken ones); *configure* structures every config section,
calls ``wisp_configure``, collects commands and event handlers and compiles
each one's pipeline; *start* starts services and awaits ``wisp_startup``;
*stop* undoes all of it.  ``invoke`` runs one context through its compiled
chain and always returns an :class:`~wisp.responses.Outcome`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import inspect
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, TypeVar

import attrs
import cattrs
from loguru import logger

from wisp.compiling import CompiledTarget, call_each, call_first, implementations
from wisp.config import CONFIG_FILE, Config, ConfigSource, CoreConfig, env_list, find_rootdir
from wisp.context import InvocationType, WispContext, _current
from wisp.decisions import Decision
from wisp.errors import ConfigError, PermissionDenied, PluginError, WispError
from wisp.logs import install_context_patcher
from wisp.pipeline import CallNext, Middleware, compile_chain, sort_middleware
from wisp.pluginmanager import Origin, WispPluginManager
from wisp.responses import Outcome, Response
from wisp.services import ServiceRegistry
from wisp.stash import Stash
from wisp.targets import Command, EventHandler, JobHandler, Target

__all__ = ["State", "Wisp"]

T = TypeVar("T")


class State(enum.Enum):
    NEW = "new"
    BOOTSTRAPPED = "bootstrapped"
    CONFIGURED = "configured"
    STARTED = "started"
    STOPPED = "stopped"


def _split(value: str | None) -> list[str]:
    """A list variable: comma-separated or a JSON array, as config parses it."""
    try:
        items = env_list(value or "")
    except ValueError:
        return []  # reported by the config loader, which reads the same variable
    return [str(p).strip() for p in items if str(p).strip()]


class Wisp:
    """A Wisp application: one plugin manager, one config, one set of services."""

    def __init__(
        self,
        *,
        rootdir: str | os.PathLike[str] | None = None,
        config_file: str | os.PathLike[str] | None = None,
        plugins: Sequence[str] = (),
        block: Sequence[str] = (),
        autoload: bool | None = None,
        strict_plugins: bool | None = None,
        trace: bool | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        install_context_patcher()
        self.env: Mapping[str, str] = dict(os.environ if env is None else env)
        if config_file is not None:
            file = Path(config_file).resolve()
            self.rootdir = Path(rootdir).resolve() if rootdir is not None else file.parent
        else:
            self.rootdir = Path(rootdir).resolve() if rootdir is not None else find_rootdir()
            file = self.rootdir / CONFIG_FILE
        self._config_problems: list[str] = []
        try:
            source = ConfigSource.load(file, self.env)
        except ConfigError as exc:
            self._config_problems.extend(exc.problems)
            source = ConfigSource(None, {}, {}, self.env)
        core, problems = source.structure("wisp", CoreConfig)
        self._config_problems.extend(problems)
        core = core or CoreConfig()
        if strict_plugins is not None:
            core = attrs.evolve(core, strict_plugins=strict_plugins)
        if autoload is not None:
            core = attrs.evolve(core, autoload=autoload)
        if trace is not None:
            core = attrs.evolve(core, trace=trace)
        self.config = Config(self.rootdir, source, core)
        self._cmdline_plugins = tuple(plugins)
        self._cmdline_block = tuple(block)
        self.pluginmanager = WispPluginManager(trace=core.trace)
        self.services = ServiceRegistry()
        #: Application-wide plugin state, keyed by :class:`wisp.StashKey`.
        self.stash = Stash()
        self.commands: dict[str, Command] = {}
        self.event_handlers: list[EventHandler] = []
        self.job_handlers: dict[str, JobHandler] = {}
        self._handlers_by_event: dict[str, list[EventHandler]] = {}
        self._compiled: dict[Target, CompiledTarget] = {}
        self._make_context: tuple[Any, ...] = ()
        self._global: CompiledTarget | None = None
        #: The ``wisp`` subcommand this process runs (``"run"``, ``"worker"``...);
        #: ``None`` when the application is used from code.  Lets a plugin keep
        #: a listener (an HTTP port) to long-running processes.
        self.cli_command: str | None = None
        self.state = State.NEW

    @property
    def hook(self) -> Any:
        """The pluggy hook relay (``app.hook.wisp_configure(app=app)``)."""
        return self.pluginmanager.hook

    @property
    def trace(self) -> bool:
        return self.config.core.trace

    # -- bootstrap & configure ----------------------------------------------------

    def register(self, plugin: object, name: str | None = None) -> bool:
        """Register a plugin object or module before :meth:`configure`."""
        if self.state not in (State.NEW, State.BOOTSTRAPPED):
            raise RuntimeError("plugins must be registered before configure()")
        name = name or getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{id(plugin)}"
        return self.pluginmanager.register(plugin, name, Origin.API)

    def required_where(self) -> str:
        """Where ``[wisp] required_plugins`` came from, for its error."""
        if "WISP_REQUIRED_PLUGINS" in self.env:
            return "WISP_REQUIRED_PLUGINS"
        path = self.config.path
        return "[wisp] required_plugins" + (f" in {path}" if path is not None else "")

    def bootstrap(self) -> Wisp:
        """Discover and register plugins; broken ones are recorded, not raised."""
        if self.state is not State.NEW:
            return self
        core = self.config.core
        blocked = [(n, "-p no:" + n) for n in self._cmdline_block]
        env_disabled = _split(self.env.get("WISP_DISABLE_PLUGINS"))
        blocked += [(n, "WISP_DISABLE_PLUGINS") for n in env_disabled]
        blocked += [(n, f"disable in {CONFIG_FILE}") for n in core.disable if n not in env_disabled]
        env_plugins = _split(self.env.get("WISP_PLUGINS"))
        requested = [(p, Origin.CMDLINE) for p in self._cmdline_plugins]
        requested += [(p, Origin.ENV) for p in env_plugins]
        requested += [(p, Origin.CONFIG) for p in core.plugins if p not in env_plugins]
        if self._config_problems:
            logger.warning(
                "invalid configuration; plugins load with [wisp] defaults:\n  - {}",
                "\n  - ".join(self._config_problems),
            )
        self.pluginmanager.load(
            blocked=blocked,
            autoload=core.autoload,
            requested=requested,
            rootdir=self.rootdir,
            command_paths=core.command_paths,
        )
        self.state = State.BOOTSTRAPPED
        return self

    def configure(self) -> Wisp:
        """Load config sections, call ``wisp_configure``, collect and compile targets.

        Raises :class:`ConfigError` listing every bad key, or :class:`PluginError`
        when ``strict_plugins`` is on and a plugin failed.
        """
        if self.state is State.NEW:
            self.bootstrap()
        if self.state is not State.BOOTSTRAPPED:
            return self
        pm = self.pluginmanager
        pm.check()  # again: plugins may have been registered after bootstrap
        for failure in pm.failures:
            logger.warning("{} (the other plugins still load)", failure.describe())
        if pm.collisions:
            raise PluginError("\n".join(pm.collisions))
        unmet = pm.check_required(self.config.core.required_plugins, self.required_where())
        if unmet is not None:
            raise PluginError(unmet)
        if self.config.core.strict_plugins and pm.failures:
            raise PluginError(
                "strict_plugins: plugins failed to load:\n"
                + "\n".join("  - " + f.describe() for f in pm.failures)
            )
        problems = list(self._config_problems)
        declared: dict[str, tuple[type[Any], str]] = {}
        for plugin_name, result in self.pluginmanager.results("wisp_config_sections"):
            for section, cls in (result or {}).items():
                if section == "wisp" or section in declared:
                    owner = "the kernel" if section == "wisp" else repr(declared[section][1])
                    problems.append(
                        f"[{section}]: plugin {plugin_name!r} declares a section "
                        f"already owned by {owner}"
                    )
                    continue
                if not attrs.has(cls):
                    problems.append(
                        f"[{section}]: plugin {plugin_name!r} declared {cls!r}, "
                        "which is not an attrs class"
                    )
                    continue
                declared[section] = (cls, plugin_name)
                value, sub = self.config.source.structure(section, cls)
                problems.extend(sub)
                if value is not None:
                    self.config.sections[section] = value
        if problems:
            raise ConfigError(problems)
        unused = (
            (set(self.config.source.data) | self.config.source.env_sections())
            - set(declared)
            - {"wisp"}
        )
        for section in sorted(unused):
            logger.warning("config section [{}] is not used by any loaded plugin", section)
        for _ in pm.results("wisp_configure", app=self):
            pass
        self._collect_targets()
        self.compile()
        self.state = State.CONFIGURED
        return self

    def _collect_targets(self) -> None:
        found: list[tuple[str, Any]] = []
        for info in self.pluginmanager.plugins():
            if isinstance(info.plugin, ModuleType):
                path = info.path
                for value in vars(info.plugin).values():
                    if isinstance(value, Command | EventHandler | JobHandler) and (
                        path is None or value.source is None or value.source == path
                    ):
                        found.append((info.name, value))
        for hookname in ("wisp_commands", "wisp_event_handlers"):
            for plugin_name, result in self.pluginmanager.results(hookname, app=self):
                found.extend((plugin_name, item) for item in result)
        for plugin_name, result in self.pluginmanager.results("wisp_job_handlers", app=self):
            for job_type, handler in result.items():
                if not isinstance(handler, JobHandler):
                    handler = JobHandler(job_type, handler)
                elif handler.type != job_type:
                    raise PluginError(
                        f"plugin {plugin_name!r} returned the handler of job type "
                        f"{handler.type!r} under the key {job_type!r}"
                    )
                found.append((plugin_name, handler))
        for plugin_name, item in found:
            if not isinstance(item, Command | EventHandler | JobHandler):
                raise PluginError(
                    f"plugin {plugin_name!r} returned {item!r}, "
                    "which is not a Command, an EventHandler or a JobHandler"
                )
            item = attrs.evolve(item, plugin=item.plugin or plugin_name)
            if isinstance(item, JobHandler):
                if item.type in self.job_handlers:
                    first = self.job_handlers[item.type]
                    raise PluginError(
                        f"job type {item.type!r} has two handlers: from plugin "
                        f"{first.plugin!r} ({first.source}) and from plugin {item.plugin!r} "
                        f"({item.source})"
                    )
                self.job_handlers[item.type] = item
            elif isinstance(item, Command):
                if item.name in self.commands:
                    other = self.commands[item.name]
                    raise PluginError(
                        f"command {item.name!r} is defined twice: by plugin {other.plugin!r} "
                        f"({other.source}) and by plugin {item.plugin!r} ({item.source})"
                    )
                self.commands[item.name] = item
            else:
                self.event_handlers.append(item)
        self.event_handlers.sort(key=lambda h: h.priority)
        for handler in self.event_handlers:
            self._handlers_by_event.setdefault(handler.event, []).append(handler)

    # -- compilation ------------------------------------------------------------

    def compile(self) -> None:
        """Build every target's chain; also callable again after adding targets."""
        self._make_context = implementations(self.hook.wisp_make_context, trace=self.trace)
        self._global = self._compile_target(None)
        self._compiled = {}
        for target in self.targets():
            self._compiled[target] = self._compile_target(target)

    def _compile_target(self, target: Target | None) -> CompiledTarget:
        pm = self.pluginmanager
        source = target.source if target is not None else None

        def scoped(name: str) -> Any:
            return pm.scoped(name, source, self.rootdir)

        middlewares: list[Middleware] = []
        if target is not None:
            caller = scoped("wisp_middleware")
            for impl in pm.impls_in_call_order(caller):
                kwargs = {"app": self, "target": target}
                try:
                    result = impl.function(*[kwargs[a] for a in impl.argnames])
                except ConfigError:
                    raise  # it names the bad key itself
                except Exception as exc:
                    raise pm.blame(impl.plugin_name, "wisp_middleware", exc) from exc
                items = (
                    result
                    if isinstance(result, Sequence)
                    else (() if result is None else (result,))
                )
                for mw in items:
                    if not isinstance(mw, Middleware):
                        raise PluginError(
                            f"plugin {impl.plugin_name!r} returned {mw!r} from "
                            "wisp_middleware; expected wisp.Middleware"
                        )
                    middlewares.append(attrs.evolve(mw, plugin=mw.plugin or impl.plugin_name))
        ordered = tuple(sort_middleware(middlewares))
        handler = target.handler if target is not None else None
        endpoint: CallNext
        if isinstance(target, Command) and not target.params:
            endpoint = handler  # type: ignore[assignment]  # no options to spread
        elif isinstance(target, JobHandler):

            def endpoint(ctx: WispContext) -> Any:
                return handler(ctx, ctx.options["payload"])  # type: ignore[misc]

        else:

            def endpoint(ctx: WispContext) -> Any:
                return handler(ctx, **ctx.options)  # type: ignore[misc]

        return CompiledTarget(
            target=target,  # type: ignore[arg-type]
            middleware=ordered,
            chain=compile_chain(ordered, endpoint, trace=self.trace),
            enrich=implementations(scoped("wisp_enrich_context"), trace=self.trace),
            decide=implementations(scoped("wisp_policy_decide"), trace=self.trace),
            error_message=implementations(scoped("wisp_error_message"), trace=self.trace),
        )

    def targets(self) -> list[Target]:
        """Every command, then every event handler, then every job handler."""
        return [*self.commands.values(), *self.event_handlers, *self.job_handlers.values()]

    def compiled(self, target: Target) -> CompiledTarget:
        """The compiled form of ``target`` (see ``wisp plugins --pipeline``)."""
        return self._compiled[target]

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Configure if needed, start services in dependency order, await ``wisp_startup``."""
        if self.state is State.STARTED:
            return
        if self.state is State.STOPPED:
            raise RuntimeError("a stopped Wisp application cannot start again; make a new one")
        self.configure()
        for plugin_name, result in self.pluginmanager.results("wisp_services", app=self):
            for service in result if isinstance(result, Sequence) else (result,):
                self.services.add(service, plugin_name)
        await self.services.start_all()
        try:
            await self._lifecycle_hook("wisp_startup", fatal=True)
        except BaseException:
            await self.services.stop_all()
            raise
        self.state = State.STARTED
        logger.debug(
            "wisp started: {} plugins, {} commands, {} services",
            len(self.pluginmanager.plugins()),
            len(self.commands),
            len(self.services.names()),
        )

    async def stop(self) -> None:
        """Await ``wisp_shutdown``, stop services in reverse order, unconfigure."""
        if self.state is State.STOPPED:
            return
        if self.state is State.STARTED:
            await self._lifecycle_hook("wisp_shutdown", fatal=False)
            await self.services.stop_all()
        if self.state in (State.STARTED, State.CONFIGURED):
            await self._lifecycle_hook("wisp_unconfigure", fatal=False)
        self.state = State.STOPPED

    async def _lifecycle_hook(self, hookname: str, *, fatal: bool) -> None:
        """Call (and await) each implementation; a failure names its plugin.

        ``fatal``: raise it; otherwise log it and go on with the others.
        """
        pm = self.pluginmanager
        for impl in pm.impls_in_call_order(getattr(self.hook, hookname)):
            try:
                result = impl.function(*[{"app": self}[a] for a in impl.argnames])
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                error = pm.blame(impl.plugin_name, hookname, exc)
                if fatal:
                    raise error from exc
                logger.opt(exception=exc).error("{}", error)

    async def __aenter__(self) -> Wisp:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Start, run until SIGINT/SIGTERM (or ``stop`` is set), then stop gracefully."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not on Unix
                pass
        gc_before = gc.get_threshold()
        try:
            # A signal during start-up (a shard waiting to IDENTIFY, a standby waiting
            # for a lease) stops it there, rather than after a start that may take minutes.
            starting = asyncio.ensure_future(self.start())
            asked = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({starting, asked}, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                starting.cancel()  # serve itself was cancelled: so is the start
                raise
            finally:
                asked.cancel()
            if not starting.done():
                logger.warning("stop asked for during start-up: stopping what had started")
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
                return
            starting.result()
            if self.config.core.gc_threshold is not None:  # read by start's configure
                gc.set_threshold(self.config.core.gc_threshold, *gc_before[1:])
            logger.info("wisp is running; press Ctrl+C to stop")
            await stop.wait()
            logger.info("stopping")
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            try:
                await self.stop()
            finally:
                gc.set_threshold(*gc_before)

    # -- invocation -------------------------------------------------------------

    async def make_context(
        self,
        invocation_type: InvocationType,
        name: str,
        *,
        target: Target | None = None,
        options: dict[str, Any] | None = None,
        raw: Any = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
        user_id: int | None = None,
    ) -> WispContext:
        """Build a context: a transport's ``wisp_make_context`` or a plain one."""
        ctx: WispContext | None = None
        if self._make_context:
            ctx = await call_first(self._make_context, self, invocation_type, name, raw)
        if ctx is None:
            ctx = WispContext(
                app=self,
                invocation_type=invocation_type,
                name=name,
                raw=raw,
                guild_id=guild_id,
                channel_id=channel_id,
                user_id=user_id,
            )
        ctx.target = target
        if options is not None:
            ctx.options = options
        return ctx

    async def invoke(self, ctx: WispContext) -> Outcome:
        """Run ``ctx.target`` through its compiled chain; errors become a safe reply."""
        target = ctx.target
        if target is None:
            raise ValueError("invoke() needs ctx.target")
        compiled = self._compiled[target]
        token = _current.set(ctx)
        try:
            try:
                if compiled.enrich:
                    await call_each(compiled.enrich, ctx)
                result = await compiled.chain(ctx)
            except Exception as exc:
                return await self._failure(ctx, compiled, exc)
            return Outcome(ctx.request_id, Response.of(result), None, result)
        finally:
            _current.reset(token)

    async def _failure(self, ctx: WispContext, compiled: CompiledTarget, exc: Exception) -> Outcome:
        if isinstance(exc, WispError):
            ctx.logger.info(
                "{} {!r} ended with {}: {}",
                ctx.invocation_type.value,
                ctx.name,
                type(exc).__name__,
                exc,
            )
        else:
            ctx.logger.opt(exception=exc).error(
                "unhandled error in {} {!r} (plugin {})",
                ctx.invocation_type.value,
                ctx.name,
                getattr(ctx.target, "plugin", None),
            )
        message: str | None = None
        try:
            message = await call_first(compiled.error_message, ctx, exc)
        except Exception:
            ctx.logger.exception("a wisp_error_message implementation failed")
        if message is None:
            message = default_error_message(ctx, exc)
        return Outcome(ctx.request_id, Response(content=message, ephemeral=True), exc)

    async def call(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        invocation_type: InvocationType = InvocationType.CLI,
        guild_id: int | None = None,
        channel_id: int | None = None,
        user_id: int | None = None,
        raw: Any = None,
    ) -> Outcome:
        """Run command ``name`` with raw ``options`` (checked and converted first)."""
        try:
            command = self.commands[name]
        except KeyError:
            raise KeyError(
                f"no command {name!r}; known: {', '.join(sorted(self.commands))}"
            ) from None
        ctx = await self.make_context(
            invocation_type,
            name,
            target=command,
            raw=raw,
            guild_id=guild_id,
            channel_id=channel_id,
            user_id=user_id,
        )
        try:
            ctx.options = command.bind(options or {})
        except WispError as exc:
            return await self._refuse(ctx, command, exc)
        return await self.invoke(ctx)

    async def _refuse(self, ctx: WispContext, target: Target, exc: Exception) -> Outcome:
        """End an invocation that failed before its chain ran (bad options or
        payload) the way a failing chain ends: logged, with a safe reply."""
        token = _current.set(ctx)
        try:
            return await self._failure(ctx, self._compiled[target], exc)
        finally:
            _current.reset(token)

    async def run_job(
        self,
        job_type: str,
        payload: Any,
        *,
        job_id: str | None = None,
        attempt: int = 1,
        guild_id: int | None = None,
        user_id: int | None = None,
    ) -> Outcome:
        """Run the handler of ``job_type`` on ``payload`` (JSON as stored) through
        its pipeline; a context of type ``job``.  The outcome's ``error`` is the
        exception, if any: retrying is the caller's business."""
        try:
            handler = self.job_handlers[job_type]
        except KeyError:
            known = ", ".join(sorted(self.job_handlers)) or "none"
            raise KeyError(f"no handler for job type {job_type!r}; known: {known}") from None
        ctx = await self.make_context(
            InvocationType.JOB, job_type, target=handler, guild_id=guild_id, user_id=user_id
        )
        ctx.job_id = job_id
        ctx.attempt = attempt
        if handler.payload_type is not None and not isinstance(payload, handler.payload_type):
            try:
                payload = cattrs.structure(payload, handler.payload_type)
            except Exception as exc:
                return await self._refuse(
                    ctx,
                    handler,
                    ValueError(
                        f"job {job_id} ({job_type}): payload does not fit "
                        f"{handler.payload_type.__name__}: {exc}"
                    ),
                )
        ctx.options = {"payload": payload}
        return await self.invoke(ctx)

    def handlers_for(self, event: str) -> Sequence[EventHandler]:
        """The handlers of ``event``, lowest ``priority`` first."""
        return self._handlers_by_event.get(event, ())

    async def emit(
        self,
        event: str,
        payload: Mapping[str, Any] | None = None,
        *,
        guild_id: int | None = None,
        channel_id: int | None = None,
        user_id: int | None = None,
        raw: Any = None,
        handlers: Sequence[EventHandler] | None = None,
    ) -> list[Outcome]:
        """Run every handler of ``event`` in priority order, each in its own context.

        A failing handler is logged with its request id and the others still
        run.  Transports filter first (bots, DMs, per-guild switches) and pass
        the ``handlers`` that remain.
        """
        outcomes = []
        for handler in self._handlers_by_event.get(event, ()) if handlers is None else handlers:
            ctx = await self.make_context(
                InvocationType.EVENT,
                event,
                target=handler,
                raw=raw,
                options=dict(payload or {}),
                guild_id=guild_id,
                channel_id=channel_id,
                user_id=user_id,
            )
            outcomes.append(await self.invoke(ctx))
        return outcomes

    async def decide(self, ctx: WispContext, capability: str) -> Decision:
        """Ask the policy hooks (scoped to ``ctx.target``); abstention grants."""
        compiled = self._compiled.get(ctx.target) if ctx.target is not None else None
        deciders = (compiled or self._global_compiled()).decide
        decision = await call_first(deciders, ctx, capability)
        if decision is None:
            return Decision.allow("no policy decided; granted by default", source=None)
        if not isinstance(decision, Decision):
            raise PluginError(f"wisp_policy_decide returned {decision!r}; expected a Decision")
        return decision

    async def require(self, ctx: WispContext, capability: str) -> None:
        """Raise :class:`PermissionDenied` unless ``capability`` is granted."""
        decision = await self.decide(ctx, capability)
        if not decision.allowed:
            raise PermissionDenied(
                f"You need the `{capability}` capability to do that."
                + (f" ({decision.reason})" if decision.reason else ""),
                capability=capability,
                detail=decision.reason,
            )

    def _global_compiled(self) -> CompiledTarget:
        if self._global is None:
            raise RuntimeError("configure() first")
        return self._global


def default_error_message(ctx: WispContext, exc: BaseException) -> str:
    """The kernel's fallback: a WispError's safe message, else a generic one."""
    if isinstance(exc, WispError):
        return exc.safe_message
    return f"Something went wrong on our side. (reference: {ctx.request_id})"
