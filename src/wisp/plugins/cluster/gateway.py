"""``GET /gateway/bot``: Discord's shard recommendation and the session-start budget.

Read with one plain REST call before any shard connects, so a process that
would overspend the day's session starts refuses before it IDENTIFYs
(spending the budget makes Discord reset the bot's token).
"""

from __future__ import annotations

import attrs

import wisp

__all__ = ["GatewayInfo", "fetch_gateway_bot"]

DISCORD_API_URL = "https://discord.com/api/v10"


@attrs.frozen
class GatewayInfo:
    """The parts of ``GET /gateway/bot`` the cluster uses."""

    shards: int
    max_concurrency: int
    total: int
    remaining: int
    #: Seconds until ``remaining`` goes back to ``total``.
    reset_after: float


async def fetch_gateway_bot(api_url: str | None, token: str) -> GatewayInfo:
    """One authenticated GET; a refused token or an odd answer is an
    :class:`wisp.ExternalServiceError` saying so."""
    import aiohttp

    url = (api_url or DISCORD_API_URL).rstrip("/") + "/gateway/bot"
    headers = {"Authorization": f"Bot {token}", "User-Agent": "DiscordBot (wisp, 1.0)"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.get(url, headers=headers) as response,
        ):
            if response.status == 401:
                raise wisp.ExternalServiceError(
                    detail="Discord refused the token ([discord] token or DISCORD_TOKEN) "
                    "on GET /gateway/bot"
                )
            if response.status != 200:
                text = (await response.text())[:200]
                raise wisp.ExternalServiceError(
                    detail=f"GET /gateway/bot answered {response.status}: {text}"
                )
            data = await response.json()
    except aiohttp.ClientError as exc:
        raise wisp.ExternalServiceError(detail=f"GET {url} failed: {exc}") from exc
    try:
        limit = data["session_start_limit"]
        return GatewayInfo(
            shards=int(data["shards"]),
            max_concurrency=int(limit.get("max_concurrency", 1)),
            total=int(limit["total"]),
            remaining=int(limit["remaining"]),
            reset_after=float(limit.get("reset_after", 0)) / 1000,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise wisp.ExternalServiceError(
            detail=f"GET /gateway/bot answered an unexpected body ({exc!r}): {str(data)[:200]}"
        ) from None
