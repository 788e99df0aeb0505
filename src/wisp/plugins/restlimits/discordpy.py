"""Every piece of discord.py's internals the restlimits plugin leans on.

- ``discord.http.Route.BASE``: the REST base, to tell REST requests from the
  gateway and CDN in the aiohttp trace (the limiter itself uses only the public
  ``http_trace`` client option).
- ``HTTPClient.request(route, *, files=None, form=None, **kwargs)``: discord.py
  raises ``HTTPException`` at once on a 429 without a ``Via`` header, which it
  takes for a Cloudflare ban.  A REST proxy in front of Discord sends such 429s
  for its own limits, so :func:`install_proxy_retry` wraps the instance's
  ``request``: a 429 without ``Via`` and with Discord's JSON body is retried
  after its ``retry_after``, a bounded number of times; a text body (a real
  Cloudflare ban page) is raised as before.  ``File.reset(seek=True)`` rewinds
  uploads before a retry (discord.py's own loop skips the seek on its first try).

Nothing else in Wisp touches these.  :func:`check_internals` fails loudly when
an upgrade changes them (the contract test calls it, and so does the install);
:data:`CHECKED_VERSIONS` lists the discord.py releases it was checked against.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import discord
from discord.http import HTTPClient, Route
from loguru import logger

__all__ = [
    "CHECKED_VERSIONS",
    "InternalsChanged",
    "api_base",
    "check_internals",
    "install_proxy_retry",
    "proxy_retry_after",
]

#: discord.py releases this module was read against.
CHECKED_VERSIONS = ("2.7.1",)


class InternalsChanged(RuntimeError):
    """discord.py changed an internal the restlimits plugin uses."""


def check_internals() -> None:
    """Raise :class:`InternalsChanged`, naming the piece, unless every internal
    used here is still where and what it was in :data:`CHECKED_VERSIONS`."""
    problems: list[str] = []
    if not isinstance(getattr(Route, "BASE", None), str):
        problems.append("discord.http.Route.BASE (the REST base, a str) is gone")
    request = getattr(HTTPClient, "request", None)
    if request is None or not inspect.iscoroutinefunction(request):
        problems.append("discord.http.HTTPClient.request is no longer a coroutine function")
    else:
        params = inspect.signature(request).parameters
        missing = [p for p in ("route", "files", "form") if p not in params]
        if missing:
            problems.append(f"HTTPClient.request lost parameter(s) {missing}")
    reset = getattr(discord.File, "reset", None)
    if reset is None or "seek" not in inspect.signature(reset).parameters:
        problems.append("discord.File.reset(seek=...) is gone")
    if problems:
        raise InternalsChanged(
            f"discord.py {discord.__version__} changed what wisp.plugins.restlimits.discordpy "
            f"relies on (checked against {', '.join(CHECKED_VERSIONS)}): " + "; ".join(problems)
        )


def api_base() -> str:
    """Where discord.py sends REST requests now (``[discord] api_url`` moves it)."""
    return Route.BASE


async def proxy_retry_after(exc: BaseException) -> float | None:
    """Seconds to wait before retrying ``exc``, if it is a 429 a REST proxy made
    (no ``Via``, Discord's JSON body); None for anything else, a ban page included."""
    if not isinstance(exc, discord.HTTPException) or exc.status != 429:
        return None
    response = exc.response
    headers = getattr(response, "headers", None) or {}
    if headers.get("Via"):
        return None  # a Discord 429 that discord.py gave up on: not ours to retry
    if headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
        return None  # a Cloudflare ban page
    try:
        # discord.py read the body already; aiohttp keeps it.
        body = await response.json()
        retry = body.get("retry_after") if isinstance(body, dict) else None
    except Exception:
        retry = None
    if retry is None:
        retry = headers.get("Retry-After")
    try:
        return max(0.0, float(retry)) if retry is not None else None
    except (TypeError, ValueError):
        return None


def install_proxy_retry(
    http: HTTPClient,
    *,
    retries: int,
    max_wait: float,
    on_retry: Callable[[float], None] | None = None,
) -> None:
    """Retry REST-proxy 429s on this client (see the module docstring)."""
    check_internals()
    original = http.request

    async def request(route: Route, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                return await original(route, **kwargs)
            except discord.HTTPException as exc:
                wait = await proxy_retry_after(exc)
                if wait is None or attempt >= retries:
                    raise
                if wait > max_wait:
                    logger.warning(
                        "REST proxy 429 on {} {} asks for {:.1f}s, more than "
                        "[restlimits] proxy_max_wait ({:.1f}s); raising",
                        route.method,
                        route.path,
                        wait,
                        max_wait,
                    )
                    raise
                attempt += 1
                logger.info(
                    "REST proxy 429 on {} {}; retry {} of {} in {:.2f}s",
                    route.method,
                    route.path,
                    attempt,
                    retries,
                    wait,
                )
                if on_retry is not None:
                    on_retry(wait)
                for file in kwargs.get("files") or ():
                    file.reset(seek=True)
                await asyncio.sleep(wait)

    http.request = request  # type: ignore[method-assign]
