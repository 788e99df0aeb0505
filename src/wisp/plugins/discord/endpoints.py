"""Where discord.py sends REST calls and opens gateway connections.

discord.py keeps both addresses in class attributes (``discord.http.Route.BASE``,
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``), so pointing a bot at a
REST proxy, a gateway proxy or the offline fake is process-wide: one bot per
process, which is how Wisp runs.  Checked against discord.py 2.7.1; the
contract test in tests/test_discord.py fails if those attributes move.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["DISCORD_API_URL", "endpoints"]

#: discord.py's own REST base, for comparison and docs.
DISCORD_API_URL = "https://discord.com/api/v10"


@contextlib.contextmanager
def endpoints(
    api_url: str | None = None, gateway_url: str | None = None, cdn_url: str | None = None
) -> Iterator[None]:
    """Point discord.py at other REST, gateway and CDN bases; restore them on exit.

    ``None`` leaves that address as it is.  With ``shard_count`` given (always,
    under the cluster plugin) discord.py connects to ``gateway_url`` without
    asking ``GET /gateway/bot``; a gateway proxy's ``resume_gateway_url`` in READY
    is followed as usual.
    """
    import yarl
    from discord.asset import Asset
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    saved = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY, Asset.BASE)
    if api_url is not None:
        Route.BASE = api_url.rstrip("/")
    if gateway_url is not None:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    if cdn_url is not None:
        Asset.BASE = cdn_url.rstrip("/")
    try:
        yield
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY, Asset.BASE = saved
