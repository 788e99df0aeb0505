"""The ``moderation`` service: act on Discord, number the case, audit it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import discord
from loguru import logger
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

import wisp
from wisp.plugins.audit.api import record
from wisp_moderation.config import ModerationConfig
from wisp_moderation.discordapi import DiscordAccess
from wisp_moderation.models import Case
from wisp_moderation.when import describe, utc

__all__ = ["LIFT", "ModerationService", "lift_key"]

#: The job type that lifts a timed ban.
LIFT = "moderation.unban"
#: Discord's longest timeout.
MAX_TIMEOUT = timedelta(days=28)
#: Two moderators acting at once may pick the same next number: try again.
_NUMBER_ATTEMPTS = 5


def lift_key(case: Case) -> str:
    """One unban job per timed ban, however often it is enqueued (start-up sweeps).

    The creation time is part of it, so a case id handed out again (an import
    replaced a guild's cases) never finds an old case's job.
    """
    return f"moderation:unban:{case.id}:{int(utc(case.created_at).timestamp() * 1e6)}"


class ModerationService(wisp.BaseService):
    """``ctx.service("moderation")``: actions, the case log and timed-ban lifting."""

    name = "moderation"
    requires: Sequence[str] = ("db", "migrations")
    #: Start after jobs (when it runs), so the start-up sweep can enqueue.
    after: Sequence[str] = ("jobs",)

    def __init__(self, app: wisp.Wisp, config: ModerationConfig) -> None:
        super().__init__()
        self.app = app
        self.config = config
        self.discord = DiscordAccess(app)

    @property
    def db(self) -> Any:
        return self.app.services.get("db")

    async def start(self) -> None:
        await super().start()
        if "jobs" in self.app.services:
            await self._sweep()

    async def stop(self) -> None:
        await self.discord.close()
        await super().stop()

    async def _sweep(self) -> None:
        """Enqueue the lifting of every timed ban still in force: bans imported, or
        stored by a process that died before enqueueing.  Idempotent by key."""
        async with self.db.session() as session:
            bans = (
                await session.scalars(
                    select(Case).where(
                        Case.action == "ban",
                        Case.expires_at.is_not(None),
                        Case.lifted_at.is_(None),
                    )
                )
            ).all()
        for case in bans:
            await self._enqueue_lift(case)

    async def _enqueue_lift(self, case: Case) -> None:
        assert case.expires_at is not None
        await self.app.services.get("jobs").enqueue(
            LIFT,
            # The ids too: a ban whose case was deleted (user data) still ends.
            {"case_id": case.id, "guild_id": case.guild_id, "user_id": case.user_id},
            idempotency_key=lift_key(case),
            run_at=utc(case.expires_at),
            queue=self.config.queue,
        )

    # -- the case log -------------------------------------------------------------------

    async def _insert(self, session: Any, **values: Any) -> Case:
        """Insert a case numbered one past the guild's last, and audit it with it.

        On SQLite the number is read and written in one statement, under the
        database's write lock; on PostgreSQL a per-guild advisory lock orders
        the writers.  A unique ``(guild_id, number)`` backs both."""
        guild_id = values["guild_id"]
        if self.db.dialect == "postgresql":
            # Read committed: concurrent inserts would all see the same max.  One
            # writer per guild at a time (until this transaction ends).
            await session.execute(
                text(
                    "SELECT pg_advisory_xact_lock(hashtext('wisp_moderation_cases'), hashtext(:g))"
                ),
                {"g": str(guild_id)},
            )
        next_number = (
            select(func.coalesce(func.max(Case.number), 0) + 1)
            .where(Case.guild_id == guild_id)
            .scalar_subquery()
        )
        row = (
            await session.execute(
                insert(Case).values(number=next_number, **values).returning(Case.id, Case.number)
            )
        ).one()
        case = Case(id=row.id, number=row.number, **values)
        await record(
            self.app,
            f"moderation.{case.action}",
            target=f"user:{case.user_id}",
            actor_id=case.moderator_id,
            guild_id=guild_id,
            after=case.as_dict(),
            detail={"case": case.number},
            session=session,
        )
        return case

    async def open_case(
        self,
        *,
        guild_id: int,
        action: str,
        user_id: int,
        moderator_id: int | None,
        reason: str,
        expires_at: datetime | None = None,
        ref_number: int | None = None,
    ) -> Case:
        """Record a case (and its audit record, in one transaction)."""
        values = {
            "guild_id": guild_id,
            "action": action,
            "user_id": user_id,
            "moderator_id": moderator_id,
            "reason": reason,
            "created_at": datetime.now(UTC),
            "expires_at": expires_at,
            "lifted_at": None,
            "ref_number": ref_number,
        }
        for attempt in range(1, _NUMBER_ATTEMPTS + 1):
            try:
                async with self.db.transaction() as session:
                    return await self._insert(session, **values)
            except IntegrityError:
                if attempt == _NUMBER_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def case(self, guild_id: int, number: int) -> Case | None:
        async with self.db.session() as session:
            found: Case | None = await session.scalar(
                select(Case).where(Case.guild_id == guild_id, Case.number == number)
            )
        return found

    async def cases_of(self, guild_id: int, user_id: int) -> list[Case]:
        async with self.db.session() as session:
            rows = await session.scalars(
                select(Case)
                .where(Case.guild_id == guild_id, Case.user_id == user_id)
                .order_by(Case.number)
            )
            return list(rows.all())

    async def delete_user(self, user_id: int, guild_id: int | None = None) -> dict[str, int]:
        """Delete the cases about ``user_id`` and forget them as the moderator of
        others (in ``guild_id`` only, when given).  Case numbers are not reused."""
        about = delete(Case).where(Case.user_id == user_id)
        took = update(Case).where(Case.moderator_id == user_id).values(moderator_id=None)
        if guild_id is not None:
            about = about.where(Case.guild_id == guild_id)
            took = took.where(Case.guild_id == guild_id)
        async with self.db.transaction() as session:
            deleted = await session.execute(about)
            forgotten = await session.execute(took)
        return {
            "moderation cases": int(getattr(deleted, "rowcount", 0) or 0),
            "moderation cases as moderator": int(getattr(forgotten, "rowcount", 0) or 0),
        }

    # -- actions ------------------------------------------------------------------------

    async def _client(self) -> discord.Client:
        return await self.discord.client()

    async def act(
        self,
        action: str,
        *,
        guild_id: int,
        user_id: int,
        moderator_id: int | None,
        reason: str,
        duration: timedelta | None = None,
    ) -> Case:
        """Do ``action`` on Discord, then record its case.  Discord refusing is a
        :class:`wisp.UserError` with Discord's words, and no case is recorded."""
        now = datetime.now(UTC)
        expires_at = now + duration if duration is not None else None
        if action == "ban" and duration is not None and "jobs" not in self.app.services:
            raise wisp.UserError(
                "Timed bans need the jobs plugin, which is not running here; "
                "ban without a duration, or turn jobs on."
            )
        if action != "warn":
            client = await self._client()
            try:
                if action == "kick":
                    await client.http.kick(user_id, guild_id, reason=reason)
                elif action == "ban":
                    await client.http.ban(user_id, guild_id, 0, reason=reason)
                elif action == "timeout":
                    assert expires_at is not None
                    await client.http.edit_member(
                        guild_id,
                        user_id,
                        reason=reason,
                        communication_disabled_until=expires_at.isoformat(),
                    )
                else:
                    raise ValueError(f"unknown moderation action {action!r}")
            except discord.NotFound as exc:
                raise wisp.UserError(f"<@{user_id}> is not in this server ({exc.text}).") from None
            except discord.Forbidden as exc:
                why = exc.text or "Missing Permissions"
                raise wisp.UserError(f"Discord refused to {action} <@{user_id}>: {why}.") from None
        case = await self.open_case(
            guild_id=guild_id,
            action=action,
            user_id=user_id,
            moderator_id=moderator_id,
            reason=reason,
            expires_at=expires_at,
        )
        if action == "ban" and expires_at is not None:
            await self._enqueue_lift(case)
        return case

    async def lift(
        self, case_id: int, guild_id: int | None = None, user_id: int | None = None
    ) -> dict[str, Any]:
        """Lift the timed ban of case ``case_id`` (the unban job's work), once.

        The ban is marked lifted and the automatic ``unban`` case recorded in one
        transaction; a job run again finds it lifted and does nothing.  A case
        deleted meanwhile (``wisp data delete-user``) still has its ban lifted,
        from ``guild_id`` and ``user_id``, with no case recorded.
        """
        async with self.db.session() as session:
            ban: Case | None = await session.get(Case, case_id)
        if ban is None:
            if guild_id is None or user_id is None:
                return {"skipped": "no such case"}
            client = await self._client()
            try:
                await client.http.unban(user_id, guild_id, reason="A timed ban expired")
            except discord.NotFound:
                return {"skipped": "not banned"}
            await record(
                self.app,
                "moderation.unban",
                target=f"user:{user_id}",
                actor_id=None,
                guild_id=guild_id,
                detail={"case": None, "reason": "a timed ban expired; its case was deleted"},
            )
            return {"unbanned": user_id, "case": None}
        if ban.lifted_at is not None:
            return {"skipped": "already lifted"}
        async with self.db.session() as session:
            later = await session.scalar(
                select(func.min(Case.number)).where(
                    Case.guild_id == ban.guild_id,
                    Case.user_id == ban.user_id,
                    Case.action == "ban",
                    Case.number > ban.number,
                )
            )
        if later is not None:
            # A later ban (for good, or longer) decides when this user comes back.
            return {"skipped": f"superseded by case #{later}"}
        client = await self._client()
        try:
            await client.http.unban(ban.user_id, ban.guild_id, reason=f"Case #{ban.number} expired")
        except discord.NotFound:
            logger.info("case #{}: user {} was already unbanned", ban.number, ban.user_id)
        reason = f"Ban (case #{ban.number}) expired."
        for attempt in range(1, _NUMBER_ATTEMPTS + 1):
            try:
                async with self.db.transaction() as session:
                    done = await session.execute(  # write first (SQLite locking)
                        update(Case)
                        .where(Case.id == case_id, Case.lifted_at.is_(None))
                        .values(lifted_at=datetime.now(UTC))
                    )
                    if getattr(done, "rowcount", 0) != 1:
                        return {"skipped": "already lifted"}
                    unban = await self._insert(
                        session,
                        guild_id=ban.guild_id,
                        action="unban",
                        user_id=ban.user_id,
                        moderator_id=None,
                        reason=reason,
                        created_at=datetime.now(UTC),
                        expires_at=None,
                        lifted_at=None,
                        ref_number=ban.number,
                    )
                break
            except IntegrityError:
                if attempt == _NUMBER_ATTEMPTS:
                    raise
        if self.config.log_channel is not None:
            channel = client.get_partial_messageable(self.config.log_channel)
            await channel.send(
                f"Case #{unban.number}: <@{ban.user_id}> unbanned, {reason[0].lower()}{reason[1:]}",
                allowed_mentions=discord.AllowedMentions.none(),
            )
        return {"case": unban.number}


def show(case: Case, *, now: datetime | None = None) -> str:
    """One line about a case, as ``/case`` and ``/cases`` print it."""
    now = now or datetime.now(UTC)
    if case.moderator_id is not None:
        by = f"<@{case.moderator_id}>"
    else:  # an automatic unban, or a moderator whose data was deleted
        by = "the bot" if case.action == "unban" else "a former moderator"
    text = (
        f"Case #{case.number}: {case.action} <@{case.user_id}> by {by}, "
        f"{utc(case.created_at):%Y-%m-%d %H:%M} UTC: {case.reason}"
    )
    if case.expires_at is not None:
        ends = utc(case.expires_at)
        text += f" (for {describe(ends - utc(case.created_at))}, until {ends:%Y-%m-%d %H:%M} UTC"
        if case.lifted_at is not None:
            text += ", lifted"
        text += ")"
    return text
