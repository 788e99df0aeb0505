"""Rate limits: GCRA buckets per user, member, channel, guild or command,
in memory or in Redis, and concurrency limits.

Bundled plugin ``ratelimit``; block it with ``-p no:ratelimit``.  A command
declares its limits in metadata (``@wisp.command(rate_limit="3/10s per
user")``, or a list: every bucket must pass, and a rejected call takes no
token from any of them); ``[ratelimit.commands]`` overrides them by command
name, ``[ratelimit] default`` applies to commands without any, plugins add
buckets through ``wisp_ratelimit_buckets``, and a guild's admins replace a
command's limits in their guild with ``/ratelimit set`` (stored through the
storage plugin's ``guild_data``; ``wisp ratelimit`` on the command line).
``concurrency="1 per user"`` caps calls in flight.  The middleware runs in
the ``RATE_LIMIT`` band, after policy.  Bad limits fail start-up naming the command or config key.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

import wisp
from wisp.config import positive
from wisp.plugins.ratelimit.guildlimits import GuildLimits
from wisp.plugins.ratelimit.limits import Limit, LimitError, parse_limit
from wisp.plugins.ratelimit.memory import MemoryBackend
from wisp.targets import Target

__all__ = ["Limit", "RateLimitConfig", "parse_limit"]


WISP_PLUGIN = wisp.PluginMetadata(
    name="ratelimit",
    description="GCRA rate limits in memory or Redis, per-guild overrides.",
    api=">=1.0,<2",
    commands=("ratelimit set", "ratelimit reset", "ratelimit show"),
    capabilities=("ratelimit.manage",),
    data="Rate-limit counters keyed by user, channel or guild, in memory or Redis, which "
    "expire with their window; per-guild overrides.",
)


@attrs.frozen
class RateLimitConfig:
    """``[ratelimit]``."""

    backend: Literal["memory", "redis"] = "memory"
    #: Most buckets the memory backend keeps (least recently used go first).
    max_keys: int = attrs.field(default=100_000, validator=positive)
    #: When Redis fails: "open" lets calls through, "closed" refuses them (logged either way).
    on_redis_error: Literal["open", "closed"] = "open"
    #: Limits for commands that declare none.
    default: list[str] = attrs.field(factory=list)
    #: Per command name, limits that replace the command's own.
    commands: dict[str, list[str]] = attrs.field(factory=dict)
    #: Let guilds override limits (needs the storage plugin).
    per_guild: bool = True
    #: How long a process keeps a guild's overrides before reading them again.
    guild_cache_seconds: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))


class RateLimitService(wisp.BaseService):
    """Owns the backend, built once the services it may need have started."""

    name = "ratelimit"
    after = ("redis", "guild_data")

    def __init__(self, app: wisp.Wisp, config: RateLimitConfig) -> None:
        super().__init__()
        self.app = app
        self.config = config
        self.backend: Any = MemoryBackend(config.max_keys)
        self.in_flight: dict[str, int] = {}
        self.guilds: GuildLimits | None = None

    async def start(self) -> None:
        if self.config.backend == "redis":
            if "redis" not in self.app.services:
                raise wisp.PluginError(
                    '[ratelimit] backend = "redis" needs the redis plugin and [redis] url'
                )
            from wisp.plugins.ratelimit.redisbackend import RedisBackend

            self.backend = RedisBackend(self.app.services.get("redis").client)
        if self.config.per_guild and "guild_data" in self.app.services:
            self.guilds = GuildLimits(
                self.app.services.get("guild_data"), self.config.guild_cache_seconds
            )
        await super().start()


_service = wisp.StashKey[RateLimitService]()


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"ratelimit": RateLimitConfig}


@wisp.hookimpl
def wisp_configure(app: wisp.Wisp) -> None:
    config: RateLimitConfig = app.config.section(RateLimitConfig)
    problems = []
    for where, specs in [
        ("ratelimit.default", config.default),
        *((f"ratelimit.commands.{k}", v) for k, v in config.commands.items()),
    ]:
        for i, spec in enumerate(specs):
            try:
                parse_limit(spec)
            except LimitError as exc:
                problems.append(f"{where}[{i}]: {exc}")
    if problems:
        raise wisp.ConfigError(problems)
    app.stash[_service] = RateLimitService(app, config)


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> wisp.Service:
    return app.stash[_service]


@wisp.hookimpl
def wisp_capabilities() -> list[wisp.Capability]:
    return [wisp.Capability("ratelimit.manage", "Change rate limits in a server.", "deny")]


@wisp.hookimpl
def wisp_commands() -> list[wisp.Command]:
    from wisp.plugins.ratelimit.commands import COMMANDS

    return COMMANDS


@wisp.hookimpl
def wisp_cli_commands() -> list[wisp.CliCommand]:
    from wisp.plugins.ratelimit.cli import COMMANDS

    return COMMANDS


def _specs(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def limits_for(app: wisp.Wisp, target: Target) -> list[Limit]:
    """The limits that apply to ``target``; a bad one is a ConfigError naming it."""
    config: RateLimitConfig = app.config.section(RateLimitConfig)
    if target.name in config.commands:
        specs, where = config.commands[target.name], f"ratelimit.commands.{target.name}"
    else:
        specs = _specs(target.metadata.get("rate_limit"))
        where = f"command {target.name!r} (plugin {target.plugin}) metadata rate_limit"
        if not specs:
            specs, where = config.default, "ratelimit.default"
    out, problems = [], []
    for spec in specs:
        try:
            out.append(spec if isinstance(spec, Limit) else parse_limit(str(spec)))
        except LimitError as exc:
            problems.append(f"{where}: {exc}")
    for plugin, result in app.pluginmanager.results(
        "wisp_ratelimit_buckets", app=app, target=target
    ):
        for spec in result:
            try:
                out.append(spec if isinstance(spec, Limit) else parse_limit(str(spec)))
            except LimitError as exc:
                problems.append(f"wisp_ratelimit_buckets of plugin {plugin!r}: {exc}")
    if problems:
        raise wisp.ConfigError(problems)
    return out


def _concurrency(target: Target) -> tuple[int, str] | None:
    spec = target.metadata.get("concurrency")
    if spec is None:
        return None
    count, _, key = str(spec).partition(" per ")
    key = key.strip() or "user"
    if not count.strip().isdigit() or int(count) < 1 or key not in ("user", "guild", "command"):
        raise wisp.ConfigError(
            [
                f"command {target.name!r} metadata concurrency: {spec!r} is not "
                "'N per user|guild|command' with N >= 1"
            ]
        )
    return int(count), key


@wisp.hookimpl
def wisp_middleware(app: wisp.Wisp, target: Target) -> wisp.Middleware | None:
    if target.kind != "command":
        return None
    own_limits = limits_for(app, target)
    concurrency = _concurrency(target)
    service = app.stash[_service]
    per_guild = service.config.per_guild and app.pluginmanager.has_plugin("storage")
    if not own_limits and concurrency is None and not per_guild:
        return None
    command = target.name
    fail_open = service.config.on_redis_error == "open"

    async def rate_limit(ctx: wisp.WispContext, call_next: wisp.CallNext) -> Any:
        limits = own_limits
        guilds = service.guilds
        if ctx.guild_id is not None and guilds is not None:
            overrides = guilds.cached(ctx.guild_id)
            if overrides is None:
                overrides = await guilds.for_guild(ctx.guild_id)
            limits = overrides.get(command, own_limits)
        if limits:
            buckets = [(b, lim) for lim in limits if (b := lim.bucket(ctx, command)) is not None]
            try:
                wait = await service.backend.hit(buckets) if buckets else 0.0
            except Exception as exc:
                if not fail_open:
                    ctx.logger.error(
                        "rate limiter unavailable, refusing {} (on_redis_error = closed): {}",
                        command,
                        exc,
                    )
                    raise wisp.ExternalServiceError() from exc
                ctx.logger.warning(
                    "rate limiter unavailable, letting {} through (on_redis_error = open): {}",
                    command,
                    exc,
                )
                wait = 0.0
            if wait > 0.0:
                raise wisp.RateLimited(wait, bucket=", ".join(str(lim) for lim in limits))
        if concurrency is None:
            return await call_next(ctx)
        most, key = concurrency
        ident = {"user": ctx.user_id, "guild": ctx.guild_id, "command": "all"}[key]
        slot = f"{command}:{key}:{ident}"
        running = service.in_flight.get(slot, 0)
        if running >= most:
            raise wisp.RateLimited(
                1.0,
                f"`/{command}` is already running {running} time(s) for you; "
                "wait for it to finish.",
            )
        service.in_flight[slot] = running + 1
        try:
            return await call_next(ctx)
        finally:
            left = service.in_flight[slot] - 1
            if left:
                service.in_flight[slot] = left
            else:
                del service.in_flight[slot]

    return wisp.Middleware("ratelimit", rate_limit, wisp.Order.RATE_LIMIT)
