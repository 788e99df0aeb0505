"""Event handlers: answer a greeting in the channel."""

from __future__ import annotations

from typing import Any

import wisp


@wisp.event_handler("message", priority=50)
async def greet_back(ctx: wisp.WispContext, message: Any) -> None:
    if message.content.lower().startswith(("hello", "hi ")):
        await message.channel.send(f"Hello, {message.author.display_name}!")
