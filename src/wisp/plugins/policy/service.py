"""The ``policy`` service: rules from the database, cached per guild.

Rule changes are written to the one audit log through
:func:`wisp.plugins.audit.api.record`, in the change's own transaction; with
the audit plugin blocked they are simply not recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from loguru import logger
from sqlalchemy import delete, select

import wisp
from wisp.plugins.audit import api as audit_api
from wisp.plugins.policy.engine import (
    Action,
    Actor,
    Capability,
    Explanation,
    Rule,
    RuleIndex,
    Scope,
    resolve,
)
from wisp.plugins.policy.models import PolicyRule

__all__ = ["CHANNEL", "PolicyService", "actor_of"]

#: The Redis pub/sub channel that carries "rules changed" (a guild id, or "*").
CHANNEL = "wisp:policy:invalidate"


def _rule(row: PolicyRule) -> Rule:
    return Rule(
        row.capability,
        Action(row.action),
        Scope[row.scope.upper()],
        row.scope_id,
        row.priority,
        row.guild_id,
        row.id,
    )


def _as_dict(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "guild_id": rule.guild_id,
        "capability": rule.capability,
        "action": rule.action.value,
        "scope": rule.scope.name.lower(),
        "scope_id": rule.scope_id,
        "priority": rule.priority,
    }


def actor_of(ctx: wisp.WispContext) -> Actor:
    """The caller as policy sees it; roles and permissions come from the
    transport's member object (``ctx.raw``'s ``user`` or ``author``), if any."""
    raw = ctx.raw
    member = getattr(raw, "user", None) or getattr(raw, "author", None)
    roles: dict[int, int] = {}
    for role in getattr(member, "roles", None) or ():
        roles[int(role.id)] = int(getattr(role, "position", 0))
    guild = getattr(raw, "guild", None)
    permissions = getattr(member, "guild_permissions", None)
    return Actor(
        user_id=ctx.user_id,
        guild_id=ctx.guild_id,
        channel_id=ctx.channel_id,
        roles=roles,
        is_owner=guild is not None and getattr(guild, "owner_id", None) == ctx.user_id,
        is_admin=bool(getattr(permissions, "administrator", False)),
    )


class PolicyService(wisp.BaseService):
    """Reads and changes rules; decisions come from a per-guild cache."""

    name = "policy"
    requires: Sequence[str] = ("db", "migrations")
    #: With a shared Redis, changes reach every process through pub/sub;
    #: ``wisp policy audit`` reads the audit log.
    after = ("redis", "audit")

    def __init__(
        self,
        app: wisp.Wisp,
        declared: Mapping[str, Capability],
        *,
        bootstrap: bool,
        stored: bool = True,
    ) -> None:
        super().__init__()
        if not stored:
            self.requires = ()  # no rules table: no database to wait for
        self.stored = stored
        self.app = app
        self.declared = dict(declared)
        self.bootstrap = bootstrap
        self.db: Any = None
        self._cache: dict[int | None, RuleIndex] = {}
        self._redis: Any = None
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.db = self.app.services.get("db") if self.stored else None
        if "redis" in self.app.services:
            service = self.app.services.get("redis")
            self._redis = service.client
            subscribed = asyncio.Event()
            self._listener = asyncio.create_task(
                service.listen(
                    CHANNEL,
                    self._on_message,
                    on_gap=self.invalidate,  # changes may have been missed: forget them all
                    subscribed=subscribed,
                    what="policy cache invalidation",
                ),
                name="wisp policy invalidation",
            )
            try:
                async with asyncio.timeout(10):
                    await subscribed.wait()  # no change may slip past before start returns
            except TimeoutError:
                await wisp.cancel_and_wait(self._listener)
                raise wisp.ExternalServiceError(
                    detail="could not subscribe to the policy channel in Redis within 10 s"
                ) from None
        await super().start()

    async def stop(self) -> None:
        await wisp.cancel_and_wait(self._listener)
        self._listener = None
        await super().stop()

    def _on_message(self, data: bytes) -> None:
        text = data.decode(errors="replace")
        if text == "*":
            self.invalidate(None)
        elif text.isdigit():
            self.invalidate(int(text))
        else:
            logger.warning("policy: ignored a malformed invalidation: {!r}", text[:100])

    async def _changed(self, guild_id: int | None) -> None:
        """Drop the cache here at once, and in every other process through Redis."""
        self.invalidate(guild_id)
        if self._redis is None:
            return
        try:
            await self._redis.publish(CHANNEL, "*" if guild_id is None else str(guild_id))
        except Exception as exc:
            logger.warning(
                "policy change not broadcast through Redis ({}): other processes keep "
                "their cached rules until restart",
                exc,
            )

    def invalidate(self, guild_id: int | None = None) -> None:
        """Forget cached rules: one guild's, or (``None``, a global rule) all."""
        if guild_id is None:
            self._cache.clear()
        else:
            self._cache.pop(guild_id, None)

    async def index(self, guild_id: int | None) -> RuleIndex:
        """A guild's rules and the global ones, indexed (cached)."""
        cached = self._cache.get(guild_id)
        if cached is not None:
            return cached
        if self.db is None:  # storage blocked: no rules, defaults decide
            self._cache[guild_id] = RuleIndex(())
            return self._cache[guild_id]
        query = (
            select(PolicyRule)
            .where((PolicyRule.guild_id.is_(None)) | (PolicyRule.guild_id == guild_id))
            .order_by(PolicyRule.id)
        )
        async with self.db.session() as s:
            rows = (await s.scalars(query)).all()
        index = RuleIndex(_rule(r) for r in rows)
        self._cache[guild_id] = index
        return index

    async def rules(self, guild_id: int | None) -> list[Rule]:
        """A guild's rules and the global ones, by id."""
        return (await self.index(guild_id)).rules

    async def explain(
        self, capability: str, actor: Actor, *, every_rule: bool = True
    ) -> Explanation:
        """Decide, and list the rules considered (``every_rule=False``: only those
        that can win, which is all a decision needs)."""
        index = await self.index(actor.guild_id)
        candidates = index.candidates(capability, actor, best_only=not every_rule)
        return resolve(capability, actor, candidates, self.declared, bootstrap=self.bootstrap)

    async def add(self, rule: Rule, *, by: int | None = None) -> Rule:
        """Store a rule (its ``id`` is assigned) and audit it."""
        self._need_storage()
        row = PolicyRule(
            guild_id=rule.guild_id,
            capability=rule.capability,
            action=rule.action.value,
            scope=rule.scope.name.lower(),
            scope_id=rule.scope_id,
            priority=rule.priority,
            created_by=by,
        )
        async with self.db.transaction() as s:
            s.add(row)
            await s.flush()
            stored = attrs.evolve(rule, id=row.id)
            await audit_api.record(
                self.app,
                "policy.set",
                target=f"rule:{row.id}",
                actor_id=by,
                guild_id=rule.guild_id,
                after=_as_dict(stored),
                session=s,
            )
        await self._changed(rule.guild_id)
        return stored

    def _need_storage(self) -> None:
        if self.db is None:
            raise wisp.UserError(
                "Policy rules are stored by the storage plugin, which is not loaded: "
                "each capability's default and the bootstrap grant decide."
            )

    async def remove(self, rule_id: int, *, by: int | None = None) -> Rule:
        self._need_storage()
        async with self.db.transaction() as s:
            row = await s.get(PolicyRule, rule_id)
            if row is None:
                raise wisp.NotFound(f"No policy rule #{rule_id}.")
            old = _rule(row)
            await s.execute(delete(PolicyRule).where(PolicyRule.id == rule_id))
            await audit_api.record(
                self.app,
                "policy.remove",
                target=f"rule:{rule_id}",
                actor_id=by,
                guild_id=old.guild_id,
                before=_as_dict(old),
                session=s,
            )
        await self._changed(old.guild_id)
        return old

    async def audit(self, guild_id: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Recent rule changes, newest first, from the audit log."""
        if "audit" not in self.app.services:
            raise wisp.UserError(
                "rule changes are recorded by the audit plugin, which is not loaded "
                "(or has no storage)"
            )
        entries = await self.app.services.get("audit").list(
            guild_id=guild_id, action="policy.", limit=limit, newest_first=True
        )
        return [
            {
                "id": e["id"],
                "at": e["at"],
                "actor_id": e["actor_id"],
                "guild_id": e["guild_id"],
                "change": e["action"].removeprefix("policy."),
                "before": e["before"],
                "after": e["after"],
            }
            for e in entries
        ]
