"""The ``reminders`` service: create, list, cancel and fire reminders."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import discord
from loguru import logger
from sqlalchemy import delete, select, update

import wisp
from wisp_reminders.config import RemindersConfig
from wisp_reminders.discordapi import DiscordAccess
from wisp_reminders.models import CANCELLED, PENDING, SENT, UNDELIVERABLE, Reminder
from wisp_reminders.when import utc

__all__ = ["FIRE", "RemindersService", "idempotency_key"]

#: The job type that fires one reminder.
FIRE = "reminders.fire"


def idempotency_key(reminder: Reminder) -> str:
    """One job per reminder, however often it is enqueued (start-up sweeps, retries).

    The creation time is part of it: SQLite may hand a rolled-back row's id out
    again, and a new reminder must never find an old reminder's job.
    """
    return f"reminders:{reminder.id}:{int(utc(reminder.created_at).timestamp() * 1e6)}"


def message_text(reminder: Reminder) -> str:
    return f"\N{ALARM CLOCK} <@{reminder.user_id}>, you asked me to remind you: {reminder.text}"


class RemindersService(wisp.BaseService):
    """``ctx.service("reminders")``: the table and the jobs that fire it."""

    name = "reminders"
    requires: Sequence[str] = ("db", "migrations")
    #: Start after jobs (when it runs), so the start-up sweep can enqueue.
    after: Sequence[str] = ("jobs",)

    def __init__(self, app: wisp.Wisp, config: RemindersConfig) -> None:
        super().__init__()
        self.app = app
        self.config = config
        self.discord = DiscordAccess(app)

    @property
    def db(self) -> Any:
        return self.app.services.get("db")

    def _jobs(self) -> Any:
        if "jobs" not in self.app.services:
            raise wisp.UserError("Reminders are off here: the jobs plugin is not running.")
        return self.app.services.get("jobs")

    async def start(self) -> None:
        await super().start()
        if "jobs" in self.app.services:
            await self._sweep()

    async def stop(self) -> None:
        await self.discord.close()
        await super().stop()

    async def _sweep(self) -> None:
        """Enqueue pending reminders that have no job: a process that died between
        storing one and enqueueing it.  The idempotency key makes this safe to repeat."""
        async with self.db.session() as session:
            rows = (
                await session.scalars(
                    select(Reminder).where(Reminder.status == PENDING, Reminder.job_id.is_(None))
                )
            ).all()
        for reminder in rows:
            await self._enqueue(reminder)
            logger.info("reminder #{} had no job; enqueued it", reminder.id)

    async def _enqueue(self, reminder: Reminder) -> None:
        job = await self._jobs().enqueue(
            FIRE,
            {"reminder_id": reminder.id},
            idempotency_key=idempotency_key(reminder),
            run_at=utc(reminder.due_at),
            queue=self.config.queue,
        )
        async with self.db.transaction() as session:
            await session.execute(
                update(Reminder).where(Reminder.id == reminder.id).values(job_id=job.id)
            )
        reminder.job_id = job.id

    async def create(
        self,
        *,
        user_id: int,
        channel_id: int,
        guild_id: int | None,
        text: str,
        due_at: datetime,
        now: datetime | None = None,
    ) -> Reminder:
        """Store a reminder and enqueue the job that fires it at ``due_at``."""
        now = now or datetime.now(UTC)
        text = text.strip()
        if not text:
            raise wisp.UserError("What should I remind you of? The text is empty.")
        if len(text) > self.config.max_text:
            raise wisp.UserError(
                f"The text is {len(text)} characters long; the most is {self.config.max_text}."
            )
        if due_at <= now:
            raise wisp.UserError(
                f"{due_at:%Y-%m-%d %H:%M:%S} UTC is in the past: give a time in the future."
            )
        if due_at - now > timedelta(days=self.config.max_days):
            raise wisp.UserError(
                f"That is more than {self.config.max_days} days away; the furthest is "
                f"{self.config.max_days} days."
            )
        self._jobs()
        # Write first, then count: on SQLite a transaction that reads before it
        # writes fails at once ("database is locked") when a worker wrote between.
        async with self.db.transaction() as session:
            reminder = Reminder(
                guild_id=guild_id,
                channel_id=channel_id,
                user_id=user_id,
                text=text,
                due_at=due_at,
                created_at=now,
                status=PENDING,
            )
            session.add(reminder)
            await session.flush()
            pending = len(
                (
                    await session.scalars(
                        select(Reminder.id).where(
                            Reminder.user_id == user_id, Reminder.status == PENDING
                        )
                    )
                ).all()
            )
            if pending > self.config.max_pending:
                raise wisp.UserError(
                    f"You already have {pending - 1} pending reminders, the most allowed; "
                    "cancel one with `/reminders cancel`."
                )
        await self._enqueue(reminder)
        return reminder

    async def pending(self, user_id: int, guild_id: int | None = None) -> list[Reminder]:
        """``user_id``'s pending reminders (in ``guild_id`` when given), soonest first."""
        query = select(Reminder).where(Reminder.user_id == user_id, Reminder.status == PENDING)
        if guild_id is not None:
            query = query.where(Reminder.guild_id == guild_id)
        async with self.db.session() as session:
            return list((await session.scalars(query.order_by(Reminder.due_at))).all())

    async def get(self, reminder_id: int) -> Reminder | None:
        async with self.db.session() as session:
            reminder: Reminder | None = await session.get(Reminder, reminder_id)
        return reminder

    async def cancel(self, reminder_id: int, user_id: int) -> Reminder:
        """Cancel ``user_id``'s own pending reminder; its job then finds nothing to say."""
        async with self.db.transaction() as session:  # write first (see create)
            done = await session.execute(
                update(Reminder)
                .where(
                    Reminder.id == reminder_id,
                    Reminder.user_id == user_id,
                    Reminder.status == PENDING,
                )
                .values(status=CANCELLED)
            )
        reminder = await self.get(reminder_id)
        if reminder is None or reminder.user_id != user_id:
            raise wisp.UserError(f"You have no reminder #{reminder_id}.")
        if getattr(done, "rowcount", 0) != 1:
            raise wisp.UserError(f"Reminder #{reminder_id} is already {reminder.status}.")
        return reminder

    async def delete_user(self, user_id: int, guild_id: int | None = None) -> int:
        """Delete ``user_id``'s reminders (in ``guild_id`` only, when given); their
        jobs then find nothing to say.  Returns how many went."""
        query = delete(Reminder).where(Reminder.user_id == user_id)
        if guild_id is not None:
            query = query.where(Reminder.guild_id == guild_id)
        async with self.db.transaction() as session:
            result = await session.execute(query)
        return int(getattr(result, "rowcount", 0) or 0)

    async def fire(self, reminder_id: int) -> dict[str, Any]:
        """Say reminder ``reminder_id`` once (the job handler's work).

        Delivery is at least once, like every job: a worker that dies after
        Discord accepted the message and before the row is marked sent repeats
        it; any other repeat finds the row ``sent`` and says nothing.
        """
        reminder = await self.get(reminder_id)
        if reminder is None:
            return {"skipped": "no such reminder"}
        if reminder.status != PENDING:
            return {"skipped": reminder.status}
        client = await self.discord.client()
        channel = client.get_partial_messageable(reminder.channel_id, guild_id=reminder.guild_id)
        try:
            message = await channel.send(
                message_text(reminder),
                allowed_mentions=discord.AllowedMentions(
                    everyone=False, roles=False, users=[discord.Object(reminder.user_id)]
                ),
            )
        except (discord.NotFound, discord.Forbidden) as exc:
            # Retrying cannot help: record why, rather than dead-letter the job.
            await self._finish(reminder_id, UNDELIVERABLE)
            logger.warning("reminder #{} is undeliverable: {}", reminder_id, exc.text)
            return {"undeliverable": exc.text}
        await self._finish(reminder_id, SENT)
        return {"sent": message.id}

    async def _finish(self, reminder_id: int, status: str) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(Reminder)
                .where(Reminder.id == reminder_id, Reminder.status == PENDING)
                .values(status=status, sent_at=datetime.now(UTC))
            )


@attrs.frozen
class FirePayload:
    """The job's payload: which reminder."""

    reminder_id: int
