"""What other code imports to answer interactions later: a stored reference to an
interaction, follow-ups through it, and the hand-off of long work to a job.

Importing this module registers nothing (blocking the ``interactions`` plugin
leaves it working).  An interaction's token lets a bot edit its answer and send
follow-ups for 15 minutes after Discord created the interaction; the expiry is
read from the interaction id (a snowflake), so any replica or worker computes
the same one without shared state.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

from wisp.context import WispContext
from wisp.errors import WispError

__all__ = [
    "TOKEN_LIFETIME",
    "InteractionExpired",
    "InteractionRef",
    "created_at",
    "followup",
    "hand_off",
]

#: Seconds an interaction token accepts follow-ups and edits (Discord: 15 minutes).
TOKEN_LIFETIME = 15 * 60
_DISCORD_EPOCH_MS = 1_420_070_400_000


class InteractionExpired(WispError):
    """A follow-up was asked for after the interaction token's 15 minutes."""

    safe_message = "This took too long: Discord no longer accepts an answer. Please run it again."


def created_at(interaction_id: int) -> float:
    """Unix time an interaction was created, from its snowflake id."""
    return ((interaction_id >> 22) + _DISCORD_EPOCH_MS) / 1000


@attrs.frozen
class InteractionRef:
    """Enough of an interaction to answer it later, from any process (JSON-ready)."""

    application_id: int
    interaction_id: int
    token: str
    expires_at: float

    @classmethod
    def of(cls, interaction: Any) -> InteractionRef:
        """The reference of a discord.py ``Interaction`` (or anything with those fields)."""
        return cls(
            application_id=int(interaction.application_id),
            interaction_id=int(interaction.id),
            token=str(interaction.token),
            expires_at=created_at(int(interaction.id)) + TOKEN_LIFETIME,
        )

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> InteractionRef:
        try:
            return cls(
                application_id=int(data["application_id"]),
                interaction_id=int(data["interaction_id"]),
                token=str(data["token"]),
                expires_at=float(data["expires_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an interaction reference: {data!r} ({exc!r})") from None

    def check(self, now: float | None = None) -> None:
        """Raise :class:`InteractionExpired` past the token's lifetime."""
        current = time.time() if now is None else now
        if current >= self.expires_at:
            raise InteractionExpired(
                detail=f"interaction {self.interaction_id}: its token expired "
                f"{current - self.expires_at:.0f}s ago (tokens last {TOKEN_LIFETIME // 60} "
                "minutes); no follow-up sent"
            )


async def hand_off(
    ctx: WispContext, job_type: str, payload: Any = None, *, ephemeral: bool = False
) -> Any:
    """Defer the interaction behind ``ctx`` and enqueue ``job_type`` to finish it.

    The job's payload is ``{"interaction": <InteractionRef JSON>, "payload":
    payload}``; the job answers with :func:`followup`.  Returns the job.
    """
    interaction = ctx.raw
    if interaction is None or not hasattr(interaction, "token"):
        raise TypeError(f"hand_off needs an interaction invocation, not {ctx.invocation_type}")
    ref = InteractionRef.of(interaction)
    ref.check()
    if not interaction.response.is_done():
        await interaction.response.defer(thinking=True, ephemeral=ephemeral)
    jobs = ctx.service("jobs")
    return await jobs.enqueue(job_type, {"interaction": ref.to_json(), "payload": payload})


async def followup(
    ctx_or_app: Any,
    ref: InteractionRef | dict[str, Any],
    content: str | None = None,
    *,
    embed: Any = None,
    ephemeral: bool = False,
    now: float | None = None,
) -> None:
    """Send a follow-up through ``ref`` (after a defer, it replaces "thinking...").

    Refuses, with :class:`InteractionExpired`, once the token's 15 minutes are
    over, before any request.  Uses the ``discord`` service's client when it
    runs (its session and rate limits), else a session of its own.
    """
    import aiohttp
    import discord

    from wisp.plugins.interactions.discordpy import interaction_webhook

    if not isinstance(ref, InteractionRef):
        ref = InteractionRef.from_json(ref)
    ref.check(now)
    app = getattr(ctx_or_app, "app", ctx_or_app)
    bot = None
    if "discord" in app.services:
        bot = getattr(app.services.get("discord"), "bot", None)
    kwargs: dict[str, Any] = {"content": content if content is not None else discord.utils.MISSING}
    if embed is not None:
        kwargs["embed"] = embed
    if bot is not None and not bot.is_closed():
        hook = interaction_webhook(ref.application_id, ref.token, client=bot)
        await hook.send(ephemeral=ephemeral, **kwargs)
        return
    async with aiohttp.ClientSession() as session:
        hook = interaction_webhook(ref.application_id, ref.token, session=session)
        await hook.send(ephemeral=ephemeral, **kwargs)
