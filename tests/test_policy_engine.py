"""Policy resolution, table-driven: scope specificity, priority, role hierarchy,
wildcards, ties, defaults and the bootstrap grant."""

from __future__ import annotations

import pytest

from wisp.plugins.policy.engine import (
    Action,
    Actor,
    Capability,
    Rule,
    Scope,
    matches,
    resolve,
)

pytestmark = pytest.mark.needs_plugin("policy")

G, C, U = 100, 200, 300  # guild, channel, user
MOD, HELPER, MUTED = 11, 12, 13  # role ids
ALLOW, DENY = Action.ALLOW, Action.DENY

member = Actor(U, G, C, roles={HELPER: 5})
moderator = Actor(U, G, C, roles={MOD: 10, HELPER: 5})
muted_mod = Actor(U, G, C, roles={MOD: 10, MUTED: 20})
owner = Actor(U, G, C, is_owner=True)
admin = Actor(U, G, C, is_admin=True)
stranger = Actor(999, G, C)
elsewhere = Actor(U, 555, 556, roles={HELPER: 5})

DECLARED = {
    "fun.roll": Capability("fun.roll", default=ALLOW),
    "moderation.ban": Capability("moderation.ban", default=DENY),
}


def rule(cap, action, scope, scope_id=None, priority=0, guild=G):
    return Rule(
        cap, action, scope, scope_id, priority, guild_id=None if scope is Scope.GLOBAL else guild
    )


CASES = [
    # (id, capability, actor, rules, allowed, deciding rule index or None)
    ("no rule: declared default allow", "fun.roll", member, [], True, None),
    ("no rule: declared default deny", "moderation.ban", member, [], False, None),
    ("no rule: undeclared is allowed", "fun.dance", member, [], True, None),
    ("no rule: admin capability denied", "policy.manage", member, [], False, None),
    ("no rule: plugins.* denied", "plugins.disable", member, [], False, None),
    (
        "global allow",
        "moderation.ban",
        member,
        [rule("moderation.ban", ALLOW, Scope.GLOBAL)],
        True,
        0,
    ),
    (
        "guild beats global",
        "moderation.ban",
        member,
        [rule("moderation.ban", ALLOW, Scope.GLOBAL), rule("moderation.ban", DENY, Scope.GUILD, G)],
        False,
        1,
    ),
    (
        "channel beats guild",
        "fun.roll",
        member,
        [rule("fun.roll", DENY, Scope.GUILD, G), rule("fun.roll", ALLOW, Scope.CHANNEL, C)],
        True,
        1,
    ),
    (
        "role beats channel",
        "fun.roll",
        member,
        [rule("fun.roll", ALLOW, Scope.CHANNEL, C), rule("fun.roll", DENY, Scope.ROLE, HELPER)],
        False,
        1,
    ),
    (
        "user beats role",
        "moderation.ban",
        moderator,
        [
            rule("moderation.ban", ALLOW, Scope.ROLE, MOD),
            rule("moderation.ban", DENY, Scope.USER, U),
        ],
        False,
        1,
    ),
    (
        "user allow beats guild deny of high priority",
        "fun.roll",
        member,
        [
            rule("fun.roll", DENY, Scope.GUILD, G, priority=100),
            rule("fun.roll", ALLOW, Scope.USER, U),
        ],
        True,
        1,
    ),
    (
        "higher priority wins within a scope",
        "fun.roll",
        member,
        [
            rule("fun.roll", DENY, Scope.GUILD, G, priority=1),
            rule("fun.roll", ALLOW, Scope.GUILD, G, priority=5),
        ],
        True,
        1,
    ),
    (
        "deny wins a tie",
        "fun.roll",
        member,
        [
            rule("fun.roll", ALLOW, Scope.GUILD, G, priority=3),
            rule("fun.roll", DENY, Scope.GUILD, G, priority=3),
        ],
        False,
        1,
    ),
    (
        "role hierarchy: the higher role wins at equal priority",
        "moderation.ban",
        moderator,
        [
            rule("moderation.ban", DENY, Scope.ROLE, HELPER),
            rule("moderation.ban", ALLOW, Scope.ROLE, MOD),
        ],
        True,
        1,
    ),
    (
        "role hierarchy: a senior muted role overrides",
        "moderation.ban",
        muted_mod,
        [
            rule("moderation.ban", ALLOW, Scope.ROLE, MOD),
            rule("moderation.ban", DENY, Scope.ROLE, MUTED),
        ],
        False,
        1,
    ),
    (
        "role priority beats role position",
        "moderation.ban",
        muted_mod,
        [
            rule("moderation.ban", ALLOW, Scope.ROLE, MOD, priority=9),
            rule("moderation.ban", DENY, Scope.ROLE, MUTED),
        ],
        True,
        0,
    ),
    (
        "a role the caller lacks does not apply",
        "moderation.ban",
        member,
        [rule("moderation.ban", ALLOW, Scope.ROLE, MOD)],
        False,
        None,
    ),
    (
        "wildcard matches",
        "moderation.ban",
        member,
        [rule("moderation.*", ALLOW, Scope.GUILD, G)],
        True,
        0,
    ),
    ("star matches everything", "fun.roll", member, [rule("*", DENY, Scope.GUILD, G)], False, 0),
    (
        "wildcard does not match a sibling prefix",
        "moderationx.ban",
        member,
        [rule("moderation.*", DENY, Scope.GUILD, G)],
        True,
        None,
    ),
    (
        "exact rule and wildcard in one scope: priority decides",
        "moderation.ban",
        member,
        [
            rule("moderation.*", DENY, Scope.GUILD, G, priority=1),
            rule("moderation.ban", ALLOW, Scope.GUILD, G),
        ],
        False,
        0,
    ),
    (
        "another guild's rules do not apply",
        "fun.roll",
        elsewhere,
        [rule("fun.roll", DENY, Scope.GUILD, G)],
        True,
        None,
    ),
    (
        "another channel's rule does not apply",
        "fun.roll",
        member,
        [rule("fun.roll", DENY, Scope.CHANNEL, C + 1)],
        True,
        None,
    ),
    (
        "another user's rule does not apply",
        "fun.roll",
        stranger,
        [rule("fun.roll", DENY, Scope.USER, U)],
        True,
        None,
    ),
    ("bootstrap: the owner holds admin capabilities", "policy.manage", owner, [], True, None),
    (
        "bootstrap: the owner beats a user deny",
        "policy.manage",
        owner,
        [rule("policy.manage", DENY, Scope.USER, U)],
        True,
        None,
    ),
    (
        "bootstrap: an administrator holds admin capabilities",
        "policy.manage",
        admin,
        [],
        True,
        None,
    ),
    (
        "bootstrap: a user deny still binds an administrator",
        "policy.manage",
        admin,
        [rule("policy.manage", DENY, Scope.USER, U)],
        False,
        0,
    ),
]


@pytest.mark.parametrize(
    ("capability", "actor", "rules", "allowed", "decider"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_resolution(capability, actor, rules, allowed, decider) -> None:
    explanation = resolve(capability, actor, rules, DECLARED)
    assert explanation.decision.allowed is allowed, explanation
    if decider is None:
        assert explanation.rule is None
    else:
        assert explanation.rule is rules[decider]


def test_bootstrap_can_be_turned_off() -> None:
    assert not resolve("policy.manage", owner, [], DECLARED, bootstrap=False).decision.allowed


def test_explain_lists_every_rule_considered_most_specific_first() -> None:
    rules = [
        rule("fun.*", ALLOW, Scope.GLOBAL),
        rule("fun.roll", DENY, Scope.GUILD, G),
        rule("fun.roll", ALLOW, Scope.USER, U),
        rule("other", DENY, Scope.USER, U),
        rule("fun.roll", DENY, Scope.ROLE, HELPER, priority=4),
    ]
    explanation = resolve("fun.roll", member, rules, DECLARED)
    assert [r.scope for r in explanation.considered] == [
        Scope.USER,
        Scope.ROLE,
        Scope.GUILD,
        Scope.GLOBAL,
    ]
    assert explanation.rule is rules[2]
    assert explanation.decision.reason == "allow fun.roll at user 300 (priority 0)"


@pytest.mark.parametrize(
    ("pattern", "capability", "expected"),
    [
        ("a.b", "a.b", True),
        ("a.*", "a.b.c", True),
        ("a.*", "ab.c", False),
        ("*", "x", True),
        ("a.b", "a.bc", False),
    ],
)
def test_matches(pattern, capability, expected) -> None:
    assert matches(pattern, capability) is expected


@pytest.mark.parametrize(
    ("capability", "actor", "rules", "allowed", "decider"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_the_index_finds_the_same_rules(capability, actor, rules, allowed, decider) -> None:
    from wisp.plugins.policy.engine import RuleIndex

    index = RuleIndex(rules)
    full = resolve(capability, actor, rules, DECLARED)
    assert resolve(capability, actor, index.candidates(capability, actor), DECLARED) == full
    best = resolve(capability, actor, index.candidates(capability, actor, best_only=True), DECLARED)
    assert (best.decision, best.rule) == (full.decision, full.rule)
