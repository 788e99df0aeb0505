"""Commands delivered twice run once: the middleware, and discord.py components.

A command opts in with metadata ``idempotent=True`` (or every command, with
``[idempotency] commands = "all"``).  The key is the delivery's identity:
``discord:interaction:<id>`` for a slash command, ``discord:message:<id>``
for a prefix command, so a gateway replay or a second process receiving the
same interaction runs it once.  ``idempotent="options"`` keys by what was
asked instead (guild, user, command and options, the key formula of
:mod:`~wisp.plugins.idempotency.api`), so a double submit, two interactions
with the same options, runs once within ``idempotency_ttl`` seconds.  A
repeat answers with the stored reply, or with ``[idempotency]
in_progress_message`` while the first delivery runs.

The middleware sits just inside policy (``Order.RATE_LIMIT - 10``): a denied
call stores nothing, and a repeat spends no rate-limit token.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from loguru import logger

import wisp
from wisp.context import InvocationType
from wisp.plugins.idempotency.api import (
    ClaimLost,
    InProgress,
    State,
    idempotency_key,
    response_record,
)
from wisp.plugins.idempotency.config import IdempotencyConfig
from wisp.targets import Target

__all__ = ["ORDER", "component_key", "idempotent_component", "middleware_for", "stored_response"]

#: Inside policy (a denial stores nothing), outside rate limits (a repeat costs no token).
ORDER = wisp.Order.RATE_LIMIT - 10

_MODES = (True, "interaction", "options")


def _mode(app: wisp.Wisp, target: Target) -> str | None:
    config: IdempotencyConfig = app.config.section(IdempotencyConfig)
    value = target.metadata.get("idempotent")
    if value is None:
        return "interaction" if config.commands == "all" else None
    if value is False:
        return None
    if value not in _MODES:
        raise wisp.ConfigError(
            [
                f"command {target.name!r} (plugin {target.plugin}) metadata idempotent: "
                f"{value!r} is not True, False, 'interaction' or 'options'"
            ]
        )
    return "interaction" if value is True else str(value)


def _ttl(app: wisp.Wisp, target: Target) -> float:
    config: IdempotencyConfig = app.config.section(IdempotencyConfig)
    value = target.metadata.get("idempotency_ttl")
    if value is None:
        return config.command_ttl_seconds or config.ttl_seconds
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise wisp.ConfigError(
            [
                f"command {target.name!r} (plugin {target.plugin}) metadata idempotency_ttl: "
                f"{value!r} is not a number of seconds greater than 0"
            ]
        )
    return float(value)


def _plain(value: Any) -> Any:
    """Options as JSON: Discord objects (members, channels, roles) by their id."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    ident = getattr(value, "id", None)
    return ident if isinstance(ident, int) else str(value)


def delivery_key(ctx: wisp.WispContext) -> str | None:
    """The identity of this delivery, or ``None`` when it has none (a CLI call)."""
    ident = getattr(ctx.raw, "id", None)
    if not isinstance(ident, int):
        return None
    if ctx.invocation_type is InvocationType.SLASH:
        return f"discord:interaction:{ident}"
    if ctx.invocation_type is InvocationType.PREFIX:
        return f"discord:message:{ident}"
    return None


def stored_response(stored: Any) -> wisp.Response | None:
    """The reply a stored record describes (the embed rebuilt when discord.py is here)."""
    if not isinstance(stored, dict):
        return None
    embed = stored.get("embed")
    if embed is not None:
        try:
            import discord

            embed = discord.Embed.from_dict(embed)
        except ImportError:  # pragma: no cover - the discord plugin needs discord.py
            embed = None
    return wisp.Response(
        content=stored.get("content"), ephemeral=bool(stored.get("ephemeral")), embed=embed
    )


async def _wait_for_completion(service: Any, key: str, wait: float) -> Any:
    """Wait up to ``wait`` seconds for ``key`` (in progress) to complete; return its
    completed record, or ``None`` if it is still running, failed or expired."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = 0.05
    while True:
        left = deadline - loop.time()
        if left <= 0:
            return None
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, 0.25)
        record = await service.backend.get(key)
        if record is None or record.state is not State.IN_PROGRESS:
            return record if record is not None and record.state is State.COMPLETED else None
        if record.expires_at <= datetime.now(UTC):
            return None


def middleware_for(app: wisp.Wisp, target: Target, *, available: bool) -> wisp.Middleware | None:
    """The middleware for ``target``, or ``None`` when it is not guarded."""
    if target.kind != "command":
        return None
    mode = _mode(app, target)
    if mode is None:
        return None
    ttl = _ttl(app, target)
    if not available:
        logger.warning(
            "command {!r} is marked idempotent but the idempotency service is off; "
            "repeats will run again",
            target.name,
        )
        return None
    operation = f"command.{target.name.replace(' ', '.')}"

    async def idempotency(ctx: wisp.WispContext, call_next: wisp.CallNext) -> Any:
        if mode == "options":
            key: str | None = idempotency_key(
                operation, _plain(ctx.options), guild_id=ctx.guild_id, user_id=ctx.user_id
            )
        else:
            key = delivery_key(ctx)
        if key is None or "idempotency" not in ctx.app.services:
            return await call_next(ctx)
        service = ctx.app.services.get("idempotency")
        result: Any = None
        try:
            async with service.idempotent(key, ttl=ttl) as claim:
                if claim.replayed:
                    ctx.logger.info(
                        "{} {!r}: a repeat of {}; answering with the stored reply",
                        ctx.invocation_type.value,
                        ctx.name,
                        key,
                    )
                    return stored_response(claim.result)
                result = await call_next(ctx)
                claim.result = response_record(wisp.Response.of(result))
                return result
        except InProgress as exc:
            wait = service.config.repeat_wait_seconds if mode == "interaction" else 0.0
            if exc.key == key and wait:
                # The same delivery: the first will answer it; wait for that answer
                # rather than take the interaction's one reply with "still working".
                done = await _wait_for_completion(service, key, wait)
                if done is not None:
                    service.counters.hits += 1
                    ctx.logger.info(
                        "{} {!r}: a repeat of {}; answering with the stored reply",
                        ctx.invocation_type.value,
                        ctx.name,
                        key,
                    )
                    return stored_response(done.result)
            ctx.logger.info(
                "{} {!r}: a repeat of {} while the first still runs",
                ctx.invocation_type.value,
                ctx.name,
                key,
            )
            raise
        except ClaimLost as exc:
            # It ran and answered; only its record is gone: say so, keep the reply.
            ctx.logger.warning("{}", exc)
            return result

    return wisp.Middleware("idempotency", idempotency, ORDER)


# -- discord.py components -----------------------------------------------------------------

Callback = Callable[..., Awaitable[Any]]


def component_key(interaction: Any, scope: str) -> str:
    """``interaction``: this delivery; ``click``: this user on this component of
    this message (with the chosen values), so a double click is one."""
    if scope == "interaction":
        return f"discord:interaction:{interaction.id}"
    data = interaction.data or {}
    message = getattr(interaction, "message", None)
    return idempotency_key(
        "discord.component",
        {
            "message": getattr(message, "id", None),
            "custom_id": data.get("custom_id"),
            "values": sorted(data.get("values") or []),
        },
        guild_id=interaction.guild_id,
        user_id=interaction.user.id,
    )


def idempotent_component(
    service: Callable[[], Any] | Any,
    *,
    scope: str = "click",
    ttl: float | None = None,
) -> Callable[[Callback], Callback]:
    """Make a discord.py view callback ``(self, interaction, item)`` run once per click.

    The callback returns the reply (a ``str`` or :class:`wisp.Response`); the
    decorator sends it, stores it, and answers a repeat with it, or with the
    in-progress message while the first click runs.  ``scope="click"`` (the
    default) folds a double click into one; ``"interaction"`` only a
    redelivery.  ``service``: the ``idempotency`` service, or a callable
    returning it (``lambda: app.services.get("idempotency")``).
    """
    if scope not in ("click", "interaction"):
        raise ValueError(f"scope must be 'click' or 'interaction', not {scope!r}")

    def decorate(func: Callback) -> Callback:
        @functools.wraps(func)
        async def callback(view: Any, interaction: Any, item: Any) -> None:
            svc = service if hasattr(service, "idempotent") else service()
            key = component_key(interaction, scope)
            response: wisp.Response | None = None
            try:
                async with svc.idempotent(key, ttl=ttl) as claim:
                    if claim.replayed:
                        response = stored_response(claim.result)
                    else:
                        response = wisp.Response.of(await func(view, interaction, item))
                        claim.result = response_record(response)
            except InProgress as exc:
                response = wisp.Response(content=exc.safe_message, ephemeral=True)
            except ClaimLost as exc:
                logger.warning("{}", exc)
            if response is not None and not interaction.response.is_done():
                kwargs: dict[str, Any] = {"content": response.content}
                if response.embed is not None:
                    kwargs["embed"] = response.embed
                await interaction.response.send_message(ephemeral=response.ephemeral, **kwargs)

        return callback

    return decorate
