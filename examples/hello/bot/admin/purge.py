"""Admin commands."""

from __future__ import annotations

import wisp


@wisp.command(description="Delete recent messages.", capability="moderation.purge")
async def purge(ctx: wisp.WispContext, count: int = 10) -> wisp.Response:
    await ctx.app.require(ctx, "moderation.purge")
    return wisp.Response(f"Deleted {count} messages.", ephemeral=True)
