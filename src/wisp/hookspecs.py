"""Hook specifications: the kernel's whole contract with plugins.

Each hook says what it is for, its parameters, whether it is ``firstresult``
(the first non-``None`` result wins and later implementations are skipped) or
``historic`` (a plugin registered late still receives it), and how
``wispconf.py`` files take part:

* **all**: every ``wispconf.py`` receives the hook, like any plugin;
* **scoped**: a ``wispconf.py`` receives the hook only for targets (commands,
  event handlers) defined in files under its own directory.

Implementations may take any subset of the parameters, by name.  Hooks marked
*runtime* are compiled at start-up into plain calls (see
:mod:`wisp.pipeline`); their implementations may be ``async def`` and must not
be pluggy wrappers, which cannot wrap coroutines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from wisp.markers import hookspec

if TYPE_CHECKING:
    import argparse

    from wisp.app import Wisp
    from wisp.cli.commands import CliCommand
    from wisp.context import InvocationType, WispContext
    from wisp.decisions import Capability, Decision
    from wisp.pipeline import Middleware
    from wisp.pluginmanager import WispPluginManager
    from wisp.services import Service
    from wisp.targets import Command, EventHandler, Target

# ---------------------------------------------------------------------------
# Bootstrapping
# ---------------------------------------------------------------------------


@hookspec(historic=True)
def wisp_addhooks(pluginmanager: WispPluginManager) -> None:
    """Add new hook specifications, for other plugins to implement.

    Call ``pluginmanager.add_hookspecs(module_or_class)``.  A plugin that
    implements a hook added this way, with arguments the spec lacks, is
    reported and unregistered; the others keep loading.

    :param pluginmanager: The Wisp plugin manager.

    Historic: a plugin registered later still receives it.
    ``wispconf.py`` files: all.
    """


@hookspec(historic=True)
def wisp_plugin_registered(plugin: object, plugin_name: str, manager: WispPluginManager) -> None:
    """A plugin was registered.

    :param plugin: The plugin module or object.
    :param plugin_name: Its registered name.
    :param manager: The Wisp plugin manager.

    Historic.  ``wispconf.py`` files: all.
    """


@hookspec
def wisp_config_sections() -> Mapping[str, type[Any]] | None:
    """Declare configuration sections: ``{"section": AttrsClass}``.

    Each section of ``wisp.toml`` (and its ``WISP_SECTION__KEY`` variables) is
    structured with cattrs into the attrs class; every bad key across all
    sections is reported at once.  Read it back with ``app.config.section(...)``.

    ``wispconf.py`` files: all.
    """


@hookspec
def wisp_configure(app: Wisp) -> None:
    """Configuration is loaded and every plugin registered; prepare.

    Called once, before commands are collected and pipelines compiled.  Do
    cheap, synchronous set-up here; I/O belongs in a service's ``start``.

    :param app: The application.

    ``wispconf.py`` files: all.
    """


@hookspec
def wisp_unconfigure(app: Wisp) -> None:
    """The application is done; undo ``wisp_configure``.

    :param app: The application.

    ``wispconf.py`` files: all.
    """


# ---------------------------------------------------------------------------
# Services and lifecycle
# ---------------------------------------------------------------------------


@hookspec
def wisp_services(app: Wisp) -> Sequence[Service] | Service | None:
    """Return services to register (see :class:`wisp.services.Service`).

    Services start in dependency order (``requires``) and stop in reverse;
    each one's ``health()`` and readiness (its optional ``ready()``, else its
    health) are shown by ``wisp doctor`` and served by the health plugin.

    :param app: The application.

    ``wispconf.py`` files: all.
    """


@hookspec
async def wisp_startup(app: Wisp) -> None:
    """Every service has started; the application is about to serve.

    May be ``async``; each implementation is awaited in turn.  An exception
    aborts start-up (services already started are stopped).

    :param app: The application.

    ``wispconf.py`` files: all.
    """


@hookspec
async def wisp_shutdown(app: Wisp) -> None:
    """The application is stopping; called before services stop.

    May be ``async``; each implementation is awaited.  Exceptions are logged
    and do not stop the others from running.

    :param app: The application.

    ``wispconf.py`` files: all.
    """


# ---------------------------------------------------------------------------
# Context
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def wisp_make_context(
    app: Wisp, invocation_type: InvocationType, name: str, raw: Any
) -> WispContext | None:
    """Build the context for an invocation from a transport's raw object.

    A transport plugin returns a context when it knows ``raw`` (for example a
    discord.py interaction) and ``None`` otherwise; the kernel builds a plain
    context when nobody does.  Runtime hook.

    :param app: The application.
    :param invocation_type: What started the invocation.
    :param name: Command or event name.
    :param raw: The transport's object, or ``None``.

    firstresult.  ``wispconf.py`` files: all.
    """


@hookspec
def wisp_enrich_context(ctx: WispContext) -> None:
    """Add to a fresh context (stash entries, ids) before the pipeline runs.

    Runtime hook; may be ``async``.

    :param ctx: The invocation's context; ``ctx.target`` is set.

    ``wispconf.py`` files: scoped.
    """


# ---------------------------------------------------------------------------
# Middleware
# ---------------------------------------------------------------------------


@hookspec
def wisp_middleware(app: Wisp, target: Target) -> Middleware | Sequence[Middleware] | None:
    """Return the middleware to run around ``target``, or ``None``.

    Called once per target at start-up; the results are sorted by
    ``Middleware.order`` (ties keep hook call order) and compiled into a chain,
    so a plugin pays nothing for commands it returns ``None`` for.

    :param app: The application.
    :param target: The command or event handler being compiled.

    ``wispconf.py`` files: scoped.
    """


# ---------------------------------------------------------------------------
# Policy
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def wisp_policy_decide(ctx: WispContext, capability: str) -> Decision | None:
    """Decide whether the caller in ``ctx`` holds ``capability``.

    Return :class:`wisp.decisions.Decision` (allow or deny, with a reason) or
    ``None`` to abstain.  When every implementation abstains the capability
    is granted.  Runtime hook; may be ``async``.

    :param ctx: The invocation's context.
    :param capability: A dotted capability name such as ``moderation.ban``.

    firstresult.  ``wispconf.py`` files: scoped, so a ``wispconf.py`` can deny
    a capability for the commands under its directory.
    """


@hookspec
def wisp_capabilities() -> Sequence[Capability] | None:
    """Declare the capabilities a plugin defines, as :class:`wisp.Capability`.

    The policy plugin reads them for each capability's default and for
    ``/policy explain``; without it they are documentation.

    ``wispconf.py`` files: all.
    """


# ---------------------------------------------------------------------------
# Rate limiting
# ---------------------------------------------------------------------------


@hookspec
def wisp_ratelimit_buckets(app: Wisp, target: Target) -> Sequence[Any] | None:
    """Return the rate-limit buckets that apply to ``target``.

    Called at start-up per target; the rate-limit plugin defines the bucket
    record and compiles the result into its middleware.

    :param app: The application.
    :param target: The command or event handler being compiled.

    ``wispconf.py`` files: scoped.
    """


@hookspec(firstresult=True)
def wisp_ratelimit_backend(app: Wisp) -> Any | None:
    """Return the rate-limit storage backend (memory, Redis, ...).

    :param app: The application.

    firstresult.  ``wispconf.py`` files: all.
    """


# ---------------------------------------------------------------------------
# Resilience
# ---------------------------------------------------------------------------


@hookspec
def wisp_resilience_patterns() -> Sequence[Any] | None:
    """Return the resilience pattern kinds this plugin provides.

    Each item is a ``wisp.plugins.resilience.api.PatternKind``: the name a
    policy step uses (``pattern = "breaker"``), its attrs config class and a
    factory.  Every bundled pattern (breaker, retry, timeout, ...) is a plugin
    implementing this hook, so blocking one removes just that kind.

    ``wispconf.py`` files: all (the root one; pattern kinds are global).
    """


@hookspec
def wisp_resilience_policies(app: Wisp) -> Mapping[str, Any] | None:
    """Return named resilience policies: ``{"name": steps}``.

    ``steps`` is a list of pattern configs (``BreakerConfig(...)``) or
    ``{"pattern": "breaker", ...}`` tables, outermost first, exactly like a
    ``[[resilience.policies.NAME]]`` array in ``wisp.toml``.  Config wins over
    a plugin for the same name.  Commands name a policy in
    ``metadata["resilience"]``; code reaches one through the ``resilience``
    service.

    :param app: The application, configured.

    ``wispconf.py`` files: all.
    """


@hookspec
def wisp_resilience_event(event: Any) -> None:
    """A resilience pattern changed state or recorded an outcome.

    Delivered by the event loop after the call step that caused it, never
    inside it; return quickly.  Implementing this hook makes every pattern
    build events for every call, so prefer state changes
    (``event.kind is EventKind.STATE_CHANGED``) for anything costly.

    :param event: A ``wisp.plugins.resilience.api.ResilienceEvent``.

    ``wispconf.py`` files: all.
    """


@hookspec
def wisp_resilience_wrappers(app: Wisp) -> Sequence[Any] | None:
    """Return wrappers around every call through a resilience policy.

    Each wrapper is ``wrap(policy, call) -> call``: given the
    ``wisp.plugins.resilience.api.Policy`` and the async callable that runs
    its patterns, it returns an async callable with the same arguments (to
    open a tracing span around the call, say).  Collected once when the
    policies are built; a policy bound while no plugin implements this hook
    costs nothing extra per call.  Wrappers apply outermost, first returned
    outside.  ``async with policy:`` blocks are not wrapped.

    :param app: The application, configured.

    ``wispconf.py`` files: all.
    """


# ---------------------------------------------------------------------------
# Commands, events, jobs
# ---------------------------------------------------------------------------


@hookspec
def wisp_commands(app: Wisp) -> Sequence[Command] | None:
    """Return commands this plugin contributes.

    Module-level ``@wisp.command`` objects in a plugin module are collected
    without this hook; use it for commands built at run time.

    :param app: The application.

    ``wispconf.py`` files: all.
    """


@hookspec
def wisp_event_handlers(app: Wisp) -> Sequence[EventHandler] | None:
    """Return event handlers this plugin contributes.

    Module-level ``@wisp.event_handler`` objects are collected without it.

    :param app: The application.

    ``wispconf.py`` files: all.
    """


@hookspec
def wisp_job_handlers(app: Wisp) -> Mapping[str, Any] | None:
    """Return handlers for durable job types: ``{"job.type": handler}``.

    A handler is ``async def handler(ctx, payload)`` or a
    :class:`wisp.JobHandler` (from ``@wisp.job("job.type")``, which plugin
    modules may also leave at module level to be collected).  The kernel runs
    job handlers through the pipeline with a context of type ``job``
    (``app.run_job``); the jobs plugin queues, leases and retries them.

    :param app: The application.

    ``wispconf.py`` files: all.
    """


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def wisp_error_message(ctx: WispContext, error: BaseException) -> str | None:
    """Return the message a user sees for ``error``, or ``None`` to pass.

    The kernel's fallback shows a :class:`wisp.errors.WispError`'s
    ``safe_message`` and, for anything else, a generic message with the
    request id (the error itself is logged).  Runtime hook; may be ``async``.

    :param ctx: The invocation's context.
    :param error: The exception that ended the invocation.

    firstresult.  ``wispconf.py`` files: scoped.
    """


# ---------------------------------------------------------------------------
# End-user data
# ---------------------------------------------------------------------------


@hookspec
async def wisp_delete_user_data(
    app: Wisp, user_id: int, guild_id: int | None
) -> Mapping[str, int] | None:
    """Delete what this plugin stores about a Discord user; return what went.

    Called by ``wisp data delete-user USER_ID [--guild ID]`` on a started
    application, once per implementation.  Return a mapping of what was
    removed to how many (``{"reminders": 3}``), ``{}`` if there was nothing.
    A plugin implementing it should say so in its record
    (``WISP_PLUGIN = wisp.PluginMetadata(..., data="...", user_data=True)``).
    May be ``async``.

    :param app: The started application.
    :param user_id: The user whose data goes.
    :param guild_id: Only that guild's data, or ``None`` for every guild and
        the user's global data.

    ``wispconf.py`` files: all.
    """


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


@hookspec
def wisp_cli_commands(app: Wisp) -> Sequence[CliCommand] | None:
    """Return ``wisp`` subcommands this plugin adds.

    :param app: The application (configured only if the command asks to be).

    ``wispconf.py`` files: all (the project-root one is loaded before the CLI
    is built).
    """


@hookspec(firstresult=True)
async def wisp_run(app: Wisp, args: argparse.Namespace) -> int | None:
    """Run the application for ``wisp run``, or return ``None`` to let others.

    The kernel's fallback starts every service and serves until SIGINT or
    SIGTERM.  A transport takes over when its options ask for it (the Discord
    plugin's ``--offline`` console, say).  May be ``async``; return the exit
    code.

    :param app: The configured (not started) application.
    :param args: The parsed ``wisp run`` arguments, plugins' options included.

    firstresult.  ``wispconf.py`` files: all.
    """


@hookspec
def wisp_cli_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """Add arguments to an existing subcommand, such as ``run``.

    :param command: The subcommand's name.
    :param parser: Its argument parser.

    ``wispconf.py`` files: all.
    """
