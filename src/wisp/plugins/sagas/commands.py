"""``/sagas show``: a run's history, for those granted ``sagas.view``."""

from __future__ import annotations

import wisp
from wisp.plugins.sagas.cli import format_run

__all__ = ["COMMANDS"]


@wisp.command(
    name="sagas show",
    capability="sagas.view",
    description="Show a saga run and its history.",
)
async def sagas_show(ctx: wisp.WispContext, run_id: str) -> wisp.Response:
    if "sagas" not in ctx.app.services:
        raise wisp.UserError("Sagas are off in this bot.")
    run = await ctx.service("sagas").get(run_id.strip())
    if run is None:
        raise wisp.UserError(f"No saga run `{run_id}`.")
    text = format_run(run)
    if len(text) > 1900:
        text = text[:1900] + "\n..."
    return wisp.Response(f"```\n{text}\n```", ephemeral=True)


COMMANDS = [sagas_show]
