"""Fun commands."""

from __future__ import annotations

import random
from typing import Literal

import wisp


@wisp.command(description="Roll a die.")
async def roll(ctx: wisp.WispContext, sides: int = 6) -> str:
    if not 2 <= sides <= 100:
        raise wisp.UserError("A die needs between 2 and 100 sides.")
    return f"You rolled {random.randint(1, sides)} (d{sides})."


@wisp.command(description="Flip a coin and call it.")
async def flip(ctx: wisp.WispContext, call: Literal["heads", "tails"]) -> str:
    side = random.choice(["heads", "tails"])
    return f"{side.capitalize()}! You {'win' if side == call else 'lose'}."
