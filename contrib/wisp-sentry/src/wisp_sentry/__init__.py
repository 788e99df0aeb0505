"""Sentry for Wisp: unexpected errors reported with their invocation.

Entry point ``sentry`` (block with ``-p no:sentry``).  With ``[sentry] dsn``
(or ``SENTRY_DSN``) set, the ``sentry`` service initialises sentry-sdk when
the app starts and flushes it when the app stops.  A middleware gives each
invocation its own Sentry scope: tags ``request_id``, ``guild``,
``invocation`` and ``command`` (or ``event``, ``job``, ``saga``), a breadcrumb
for the invocation itself and one for each log line it writes; an error that
is not a :class:`wisp.WispError` (those are answers to the user, not bugs) is
captured there.  Events pass through the logging plugin's redaction before
they leave the process.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

import wisp
from wisp_sentry import hookspecs

if TYPE_CHECKING:
    from loguru import Message

    from wisp.targets import Target

__all__ = ["SentryConfig", "SentryService", "scrub_event"]

_KIND = {"slash": "command", "prefix": "command", "cli": "command"}
_DSN = re.compile(r"^https?://[^@\s]+@[^/\s]+/\S+$")


def _dsn(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if value and not _DSN.match(value):
        raise ValueError("is not a Sentry DSN (https://KEY@HOST/PROJECT)")


def _rate(_: Any, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1")


@attrs.frozen
class SentryConfig:
    """``[sentry]`` in wisp.toml."""

    #: Where events go; also ``SENTRY_DSN``.  Empty: the plugin stays off.
    dsn: str = attrs.field(default="", validator=_dsn, metadata={"secret": True}, repr=False)
    environment: str | None = None
    release: str | None = None
    #: Share of errors sent (1.0: all).
    sample_rate: float = attrs.field(default=1.0, validator=_rate)
    #: Log lines at this level and above become breadcrumbs of the invocation.
    breadcrumb_level: str = "INFO"
    #: Let sentry-sdk turn on its integrations for what it finds installed
    #: (SQLAlchemy, Redis, aiohttp, loguru ...).  Off: only Wisp's reporting.
    auto_integrations: bool = False


@wisp.hookimpl
def wisp_addhooks(pluginmanager: Any) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"sentry": SentryConfig}


def _config(app: wisp.Wisp) -> SentryConfig:
    config: SentryConfig = app.config.section("sentry")
    if not config.dsn and app.env.get("SENTRY_DSN"):
        config = attrs.evolve(config, dsn=app.env["SENTRY_DSN"])
    return config


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    config = _config(app)
    if not config.dsn:
        logger.debug("sentry is off: no [sentry] dsn or SENTRY_DSN")
        return []
    return [SentryService(app, config)]


@wisp.hookimpl
def wisp_middleware(app: wisp.Wisp, target: Target) -> wisp.Middleware | None:
    if not _config(app).dsn:
        return None
    import sentry_sdk

    kind = target.kind  # command, event or job

    async def sentry_scope(ctx: wisp.WispContext, call_next: wisp.CallNext) -> Any:
        with sentry_sdk.isolation_scope() as scope:
            invocation = ctx.invocation_type.value
            scope.set_tag("request_id", ctx.request_id)
            scope.set_tag("invocation", invocation)
            scope.set_tag(_KIND.get(invocation, invocation), ctx.name)
            if ctx.guild_id is not None:
                scope.set_tag("guild", str(ctx.guild_id))
            if ctx.user_id is not None:
                scope.set_user({"id": str(ctx.user_id)})
            scope.add_breadcrumb(
                category="wisp.invocation",
                message=f"{invocation} {ctx.name}",
                level="info",
                data={
                    "request_id": ctx.request_id,
                    "target": kind,
                    "guild_id": ctx.guild_id,
                    "channel_id": ctx.channel_id,
                    "user_id": ctx.user_id,
                    "options": sorted(ctx.options),  # names only: values may be personal
                    **({"job_id": ctx.job_id, "attempt": ctx.attempt} if ctx.job_id else {}),
                },
            )
            try:
                return await call_next(ctx)
            except wisp.WispError:
                raise  # an answer to the user (bad input, denied, rate limited)
            except Exception as exc:
                sentry_sdk.capture_exception(exc)
                raise

    # Outermost of the observers: its scope covers every other middleware's lines.
    return wisp.Middleware("sentry", sentry_scope, wisp.Order.OBSERVE - 10)


class SentryService(wisp.BaseService):
    """Initialises sentry-sdk on start and flushes it on stop."""

    name = "sentry"

    def __init__(self, app: wisp.Wisp, config: SentryConfig) -> None:
        super().__init__()
        self.app = app
        self.config = config
        self._handler: int | None = None

    async def start(self) -> None:
        import sentry_sdk
        from sentry_sdk.integrations.logging import LoggingIntegration

        scrub = _scrubber(self.app)
        options: dict[str, Any] = {
            "dsn": self.config.dsn,
            "environment": self.config.environment,
            "release": self.config.release,
            "sample_rate": self.config.sample_rate,
            "auto_enabling_integrations": self.config.auto_integrations,
            # stdlib records reach loguru through the logging plugin, and become
            # breadcrumbs below; sentry-sdk's own handler would count them twice.
            "integrations": [LoggingIntegration(level=None, event_level=None)],
        }
        for result in self.app.hook.wisp_sentry_options(app=self.app):
            options.update(result or {})
        user_before_send = options.get("before_send")

        def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
            if user_before_send is not None:
                event = user_before_send(event, hint)
                if event is None:
                    return None
            scrubbed: dict[str, Any] = scrub_event(event, scrub)
            return scrubbed

        options["before_send"] = before_send
        sentry_sdk.init(**options)
        self._handler = logger.add(
            _breadcrumb, level=self.config.breadcrumb_level.upper(), format="{message}"
        )
        await super().start()

    async def stop(self) -> None:
        import sentry_sdk

        if self._handler is not None:
            logger.remove(self._handler)
            self._handler = None
        client = sentry_sdk.get_client()
        if client.is_active():
            client.close(timeout=5.0)  # flushes first
            # A closed client still says it is active: unbind it, as if never initialised.
            sentry_sdk.get_global_scope().set_client(None)
        await super().stop()

    async def health(self) -> wisp.Health:
        import sentry_sdk

        client = sentry_sdk.get_client()
        active = client.is_active() and getattr(client, "transport", None) is not None
        return wisp.Health(self.started and active, "initialised" if active else "not initialised")

    async def ready(self) -> wisp.Health:
        """Ready once started: error reporting must not take the bot out of service."""
        return wisp.Health(self.started, "started" if self.started else "not started")


_LEVELS = {"WARNING": "warning", "ERROR": "error", "CRITICAL": "fatal", "DEBUG": "debug"}


def _breadcrumb(message: Message) -> None:
    """A log line as a breadcrumb of the current scope (the invocation's, if any)."""
    import sentry_sdk

    record = message.record
    sentry_sdk.add_breadcrumb(
        category="log",
        message=record["message"],
        level=_LEVELS.get(record["level"].name, "info"),
        data={"logger": record["name"]},
    )


def _scrubber(app: wisp.Wisp) -> Callable[[str], str]:
    from wisp.plugins.logconfig.api import Redactor, redactor_of

    # Without the logging plugin: the shapes of secrets, and the two we know of.
    known = [_config(app).dsn, app.env.get("DISCORD_TOKEN", "")]
    redactor = redactor_of(app) or Redactor.build(known)
    return redactor.scrub


def scrub_event(event: Any, scrub: Callable[[str], str]) -> Any:
    """``event`` with ``scrub`` applied to every string in it (keys kept)."""
    if isinstance(event, str):
        return scrub(event)
    if isinstance(event, Mapping):
        return {k: scrub_event(v, scrub) for k, v in event.items()}
    if isinstance(event, list | tuple):
        return [scrub_event(v, scrub) for v in event]
    return event
