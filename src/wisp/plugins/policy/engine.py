"""Policy resolution: which rule decides whether a caller holds a capability.

Pure functions over plain records, so the rules are easy to test and cheap to
run from a per-guild cache.  The order, documented in ``docs/policy.md``:

1. Bootstrap: with ``bootstrap`` on, the guild owner holds every capability,
   and members with the Administrator permission hold every capability that
   no user-scope rule denies them, so a fresh guild is never locked out.
2. The most specific scope with a matching rule wins: user, then role, then
   channel, then guild, then global.
3. Within that scope, higher ``priority`` wins; among role rules at equal
   priority, the rule on the higher role (Discord's role position) wins; a
   remaining tie goes to deny.
4. No rule matches: the capability's declared default; undeclared
   capabilities are allowed, except admin ones (``policy.*``, ``plugins.*``),
   which are denied.

A rule's capability is exact (``moderation.ban``) or a wildcard ending in
``.*`` (``moderation.*``) or ``*`` alone.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence

import attrs

from wisp.decisions import Capability, Decision

__all__ = [
    "ADMIN_PREFIXES",
    "Action",
    "Actor",
    "Capability",
    "Explanation",
    "Rule",
    "RuleIndex",
    "Scope",
    "matches",
    "resolve",
]

ADMIN_PREFIXES = ("policy.", "plugins.")


class Scope(enum.IntEnum):
    """Where a rule applies; a higher value is more specific."""

    GLOBAL = 0
    GUILD = 1
    CHANNEL = 2
    ROLE = 3
    USER = 4


class Action(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


@attrs.frozen
class Rule:
    """One policy rule.  ``scope_id`` is the guild, channel, role or user id."""

    capability: str
    action: Action
    scope: Scope
    scope_id: int | None = None
    priority: int = 0
    guild_id: int | None = None
    id: int | None = None

    def describe(self) -> str:
        where = self.scope.name.lower() + (f" {self.scope_id}" if self.scope_id else "")
        ident = f"#{self.id} " if self.id is not None else ""
        return f"{ident}{self.action.value} {self.capability} at {where} (priority {self.priority})"


@attrs.frozen
class Actor:
    """Who is asking, where: what resolution needs to know of a caller."""

    user_id: int | None
    guild_id: int | None = None
    channel_id: int | None = None
    #: Role id -> position (higher is more senior), for the caller's roles.
    roles: Mapping[int, int] = attrs.field(factory=dict)
    is_owner: bool = False
    is_admin: bool = False


@attrs.frozen
class Explanation:
    """The decision, the rule that made it (if any) and every rule considered."""

    decision: Decision
    rule: Rule | None
    considered: tuple[Rule, ...]


def matches(pattern: str, capability: str) -> bool:
    """Does a rule's capability (exact, ``prefix.*`` or ``*``) cover ``capability``?"""
    if pattern == "*" or pattern == capability:
        return True
    return pattern.endswith(".*") and capability.startswith(pattern[:-1])


def _applies(rule: Rule, actor: Actor) -> bool:
    if rule.guild_id is not None and rule.guild_id != actor.guild_id:
        return False
    if rule.scope is Scope.GLOBAL:
        return True
    if rule.scope is Scope.GUILD:
        return actor.guild_id is not None and rule.scope_id in (None, actor.guild_id)
    if rule.scope is Scope.CHANNEL:
        return rule.scope_id == actor.channel_id
    if rule.scope is Scope.ROLE:
        return rule.scope_id in actor.roles
    return rule.scope_id == actor.user_id


def _rank(rule: Rule, actor: Actor) -> tuple[int, int, int]:
    position = actor.roles.get(rule.scope_id or 0, 0) if rule.scope is Scope.ROLE else 0
    return (rule.priority, position, 1 if rule.action is Action.DENY else 0)


def resolve(
    capability: str,
    actor: Actor,
    rules: Iterable[Rule],
    declared: Mapping[str, Capability] | None = None,
    *,
    bootstrap: bool = True,
) -> Explanation:
    """Decide ``capability`` for ``actor`` under ``rules`` (see the module docs)."""
    considered = tuple(
        sorted(
            (r for r in rules if matches(r.capability, capability) and _applies(r, actor)),
            key=lambda r: (r.scope, *_rank(r, actor)),
            reverse=True,
        )
    )
    if bootstrap and actor.is_owner:
        return Explanation(
            Decision.allow("the server owner holds every capability", "bootstrap"), None, considered
        )
    if (
        bootstrap
        and actor.is_admin
        and not any(r.scope is Scope.USER and r.action is Action.DENY for r in considered)
    ):
        return Explanation(
            Decision.allow("Administrator permission (bootstrap grant)", "bootstrap"),
            None,
            considered,
        )
    if considered:
        winner = considered[0]
        decision = Decision(winner.action is Action.ALLOW, winner.describe(), "rule")
        return Explanation(decision, winner, considered)
    return Explanation(_default(capability, declared or {}), None, considered)


def _default(capability: str, declared: Mapping[str, Capability]) -> Decision:
    cap = declared.get(capability)
    if cap is not None:
        allowed = cap.default == Action.ALLOW
        return Decision(
            allowed, f"no rule; {capability} defaults to {Action(cap.default).value}", "default"
        )
    if capability.startswith(ADMIN_PREFIXES):
        return Decision.deny(
            f"no rule; admin capability {capability} is denied by default", "default"
        )
    return Decision.allow(f"no rule; {capability} is not declared, so it is allowed", "default")


def patterns_for(capability: str) -> list[str]:
    """Every rule capability that can cover ``capability``: itself, its ``.*``
    prefixes, and ``*``."""
    parts = capability.split(".")
    return [capability, *(".".join(parts[:n]) + ".*" for n in range(len(parts) - 1, 0, -1)), "*"]


class RuleIndex:
    """Rules keyed by (capability pattern, scope, scope id).

    A decision looks up a handful of keys (the caller's patterns times their
    user, roles, channel, guild and global), so its cost does not grow with
    the number of rules in the guild.
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        self._by: dict[tuple[str, Scope, int | None], list[Rule]] = {}
        for r in self.rules:
            key = (r.capability, r.scope, None if r.scope is Scope.GLOBAL else r.scope_id)
            self._by.setdefault(key, []).append(r)
        for found in self._by.values():
            # Best first: higher priority, then deny; one key shares scope and role.
            found.sort(key=lambda r: (r.priority, r.action is Action.DENY), reverse=True)

    def __len__(self) -> int:
        return len(self.rules)

    def candidates(self, capability: str, actor: Actor, *, best_only: bool = False) -> list[Rule]:
        """Rules that may apply; with ``best_only``, one per key (enough to decide,
        since the others under a key always lose to it; ``explain`` wants all)."""
        scopes: list[tuple[Scope, int | None]] = [
            (Scope.GLOBAL, None),
            (Scope.GUILD, None),
            (Scope.GUILD, actor.guild_id),
            (Scope.CHANNEL, actor.channel_id),
            (Scope.USER, actor.user_id),
        ]
        scopes += [(Scope.ROLE, role) for role in actor.roles]
        out: list[Rule] = []
        by = self._by
        for pattern in patterns_for(capability):
            for scope, scope_id in scopes:
                found = by.get((pattern, scope, scope_id))
                if found:
                    if best_only:
                        out.append(found[0])
                    else:
                        out.extend(found)
        return out


def rules_for_guild(rules: Sequence[Rule], guild_id: int | None) -> list[Rule]:
    """The rules a guild's cache holds: its own and the global ones."""
    return [r for r in rules if r.guild_id is None or r.guild_id == guild_id]
