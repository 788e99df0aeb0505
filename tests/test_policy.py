"""The policy plugin on SQLite and PostgreSQL: rules, the middleware, explain, audit."""

from __future__ import annotations

import asyncio
import json

import pytest

import wisp
from wisp.cli.main import main

pytestmark = pytest.mark.needs_plugin("storage", "policy")

GUILD, USER, MOD_ROLE = 100, 300, 11


def setup_project(
    project, database, extra_toml: str = "", plugins: str = '"storage", "policy"'
) -> None:
    url, schema = database
    project.write(
        "wisp.toml",
        f"""
        [wisp]
        autoload = false
        plugins = [{plugins}]
        command_paths = ["bot"]

        [storage]
        url = "{url}"
        schema = "{schema}"
        auto_migrate = true
        {extra_toml}
    """,
    )
    project.write(
        "bot/admin/ban.py",
        """
        import wisp

        @wisp.command(capability="moderation.ban")
        async def ban(ctx, user: int) -> str:
            return f"banned {user}"
    """,
    )
    project.write(
        "bot/fun/roll.py",
        """
        import wisp

        @wisp.command(capability="fun.roll")
        async def roll(ctx) -> str:
            return "rolled"
    """,
    )


def setup_with_redis(project, database, redis_url: str) -> None:
    """The project of setup_project, with the redis plugin on ``redis_url``."""
    setup_project(
        project,
        database,
        f'[redis]\nurl = "{redis_url}"',
        plugins='"storage", "policy", "redis"',
    )


TAKEN: list[str] = []


class StubRateLimit:
    """Counts what reaches the rate-limit band: a denied call must not."""

    @wisp.hookimpl
    def wisp_middleware(self, target):
        async def count(ctx, call_next):
            TAKEN.append(ctx.name)
            return await call_next(ctx)

        return wisp.Middleware("stub-ratelimit", count, wisp.Order.RATE_LIMIT)


async def test_rules_decide_commands_before_rate_limits(project, database) -> None:
    setup_project(project, database)
    TAKEN.clear()
    app = project.app(autoload=None)
    app.register(StubRateLimit(), "stub")
    async with app:
        order = [m.name for m in app.compiled(app.commands["ban"]).middleware]
        assert order == ["policy", "stub-ratelimit"]
        service = app.services.get("policy")
        from wisp.plugins.policy.engine import Action, Rule, Scope

        # undeclared capability, no rule: allowed
        assert (await app.call("ban", {"user": "1"}, guild_id=GUILD, user_id=USER)).ok
        rule = await service.add(Rule("moderation.*", Action.DENY, Scope.GUILD, GUILD, 0, GUILD))
        out = await app.call("ban", {"user": "1"}, guild_id=GUILD, user_id=USER)
        assert isinstance(out.error, wisp.PermissionDenied)  # the cache was invalidated at once
        assert "`moderation.ban`" in out.response.content
        assert TAKEN == ["ban"]  # the denied call took no rate-limit token
        assert (await app.call("roll", guild_id=GUILD, user_id=USER)).ok
        await service.add(Rule("moderation.ban", Action.ALLOW, Scope.USER, USER, 0, GUILD))
        assert (await app.call("ban", {"user": "2"}, guild_id=GUILD, user_id=USER)).ok
        assert not (await app.call("ban", {"user": "2"}, guild_id=GUILD, user_id=USER + 1)).ok
        await service.remove(rule.id)
        assert (await app.call("ban", {"user": "2"}, guild_id=GUILD, user_id=USER + 1)).ok
        other_guild = await app.call("ban", {"user": "2"}, guild_id=GUILD + 1, user_id=USER)
        assert other_guild.ok


async def test_a_wispconf_takes_part_ahead_of_the_rules(project, database) -> None:
    setup_project(project, database)
    project.write(
        "bot/admin/wispconf.py",
        """
        import wisp

        @wisp.hookimpl
        def wisp_policy_decide(ctx, capability):
            if ctx.user_id == 666:
                return wisp.Decision.deny("not under bot/admin", source="wispconf")
    """,
    )
    app = project.app(autoload=None)
    async with app:
        assert not (await app.call("ban", {"user": "1"}, guild_id=GUILD, user_id=666)).ok
        assert (await app.call("roll", guild_id=GUILD, user_id=666)).ok  # bot/fun: rules only


@pytest.mark.needs_plugin("audit")
@pytest.mark.slow
async def test_policy_cli_set_list_explain_remove_audit(
    project, database, monkeypatch, capsys
) -> None:
    # Rule changes go to the one audit log, kept by the audit plugin.
    setup_project(project, database, plugins='"storage", "policy", "audit"')
    monkeypatch.chdir(project.root)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["policy", *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    async def cli(*args: str) -> tuple[int, str, str]:
        return await asyncio.to_thread(run, *args)

    code, out, _ = await cli(
        "set",
        "moderation.ban",
        "allow",
        "--scope",
        "role",
        "--id",
        str(MOD_ROLE),
        "--guild",
        str(GUILD),
        "--by",
        "1",
    )
    assert (code, out) == (0, f"added #1 allow moderation.ban at role {MOD_ROLE} (priority 0)\n")
    code, out, _ = await cli(
        "set",
        "moderation.ban",
        "deny",
        "--scope",
        "user",
        "--id",
        str(USER),
        "--guild",
        str(GUILD),
        "--priority",
        "2",
    )
    assert code == 0
    code, out, _ = await cli("set", "policy.*", "deny", "--scope", "global")
    assert code == 0
    code, out, _ = await cli("list", "--guild", str(GUILD))
    assert out.splitlines() == [
        f"#1 allow moderation.ban at role {MOD_ROLE} (priority 0) [guild {GUILD}]",
        f"#2 deny moderation.ban at user {USER} (priority 2) [guild {GUILD}]",
        "#3 deny policy.* at global (priority 0) [global]",
    ]
    code, out, _ = await cli(
        "explain",
        "moderation.ban",
        "--user",
        str(USER),
        "--guild",
        str(GUILD),
        "--role",
        str(MOD_ROLE),
    )
    assert out.splitlines() == [
        f"DENY moderation.ban: #2 deny moderation.ban at user {USER} (priority 2)",
        f" -> #2 deny moderation.ban at user {USER} (priority 2)",
        f"    #1 allow moderation.ban at role {MOD_ROLE} (priority 0)",
    ]
    code, out, _ = await cli(
        "explain",
        "moderation.ban",
        "--user",
        str(USER + 1),
        "--guild",
        str(GUILD),
        "--role",
        f"{MOD_ROLE}:5",
    )
    assert out.startswith("ALLOW moderation.ban: #1 allow")
    code, out, _ = await cli(
        "explain", "policy.manage", "--user", "9", "--guild", str(GUILD), "--owner"
    )
    assert out.startswith("ALLOW policy.manage: the server owner holds every capability")
    code, out, _ = await cli("remove", "2", "--by", "7")
    assert (code, out) == (0, f"removed #2 deny moderation.ban at user {USER} (priority 2)\n")
    code, out, _ = await cli("audit", "--guild", str(GUILD))
    entries = [json.loads(line) for line in out.splitlines()]
    assert [(e["change"], e["actor_id"]) for e in entries] == [
        ("remove", 7),
        ("set", None),
        ("set", 1),
    ]
    assert entries[0]["before"]["scope"] == "user" and entries[0]["after"] is None
    assert entries[0]["at"].endswith("+00:00")

    # bad input: a clear error, nothing written
    for args, message in [
        (("set", "Moderation.Ban", "allow", "--guild", "1"), "is not a capability"),
        (("set", "x.y", "allow", "--scope", "user", "--guild", "1"), "needs --id"),
        (("set", "x.y", "allow", "--scope", "global", "--guild", "1"), "takes neither"),
        (("set", "x.y", "allow", "--scope", "role", "--id", "5"), "needs --guild"),
        (("remove", "99"), "No policy rule #99."),
        (("explain", "x", "--user", "1", "--role", "a:b"), "expected ROLE or ROLE:POSITION"),
    ]:
        code, _, err = await cli(*args)
        assert code == 2 and message in err, (args, err)
    code, out, _ = await cli("list", "--guild", str(GUILD))
    assert len(out.splitlines()) == 2

    # rules take part in export and import
    code = await asyncio.to_thread(main, ["export", "-o", str(project.root / "out.json")])
    doc = json.loads((project.root / "out.json").read_text())
    assert [r["capability"] for r in doc["sections"]["policy_rules"]] == [
        "moderation.ban",
        "policy.*",
    ]


@pytest.mark.needs_plugin("discord")
async def test_slash_policy_commands_guarded_by_policy_manage(project, database, wisp_offline):
    setup_project(project, database)
    app = project.app(autoload=None, plugins=["discord"])
    bot = await wisp_offline(app)
    alice = bot.member_id("alice")
    # the owner holds policy.manage through the bootstrap grant
    answer = await bot.slash(
        "policy set",
        {"capability": "fun.roll", "decision": "deny", "scope": "user", "target": alice},
    )
    assert answer.replies == [f"Added #1 deny fun.roll at user {alice} (priority 0). (ephemeral)"]
    # alice does not: admin capabilities are denied by default
    answer = await bot.slash("policy list", user=alice)
    assert answer.replies == [
        "You need the `policy.manage` capability to do that. "
        "(no rule; policy.manage defaults to deny) (ephemeral)"
    ]
    # and the rule binds her, through the real discord.py member
    assert (await bot.slash("roll", user=alice)).replies[0].startswith("You need the `fun.roll`")
    assert (await bot.slash("roll")).replies == ["rolled"]
    answer = await bot.slash("policy explain", {"capability": "fun.roll", "user": alice})
    assert answer.replies[0].startswith("`fun.roll` is denied: #1 deny fun.roll at user")
    answer = await bot.slash("policy remove", {"rule": 1})
    assert answer.replies == [f"Removed #1 deny fun.roll at user {alice} (priority 0). (ephemeral)"]
    assert (await bot.slash("roll", user=alice)).replies == ["rolled"]
    assert (await bot.slash("policy list")).replies == ["No rules: defaults apply. (ephemeral)"]


@pytest.mark.needs_plugin("redis")
async def test_a_change_reaches_other_processes_through_redis(project, database, redis_url) -> None:
    setup_with_redis(project, database, redis_url)
    from wisp.plugins.policy.engine import Action, Actor, Rule, Scope

    first, second = project.app(autoload=None), project.app(autoload=None)
    async with first, second:
        one, two = first.services.get("policy"), second.services.get("policy")
        actor = Actor(USER, GUILD, None)
        assert (await two.explain("fun.roll", actor)).decision.allowed  # cached in "two"
        await one.add(Rule("fun.roll", Action.DENY, Scope.USER, USER, 0, GUILD))
        async with asyncio.timeout(5):
            while (await two.explain("fun.roll", actor)).decision.allowed:
                await asyncio.sleep(0.01)
        other = Actor(USER, GUILD + 1, None)
        assert (await two.explain("fun.dance", other)).decision.allowed
        await one.add(Rule("fun.*", Action.DENY, Scope.GLOBAL, None, 0, None))  # every guild
        async with asyncio.timeout(5):
            while (await two.explain("fun.dance", other)).decision.allowed:
                await asyncio.sleep(0.01)


@pytest.mark.needs_plugin("redis")
async def test_a_dropped_subscription_is_restored(project, database, redis_url) -> None:
    """Redis drops the listener's connection (a restart, a proxy, CLIENT KILL): the
    process subscribes again, and a change made afterwards still reaches it."""
    import redis.asyncio as aioredis

    from wisp.plugins.policy.engine import Action, Actor, Rule, Scope

    setup_with_redis(project, database, redis_url)
    admin = aioredis.Redis.from_url(redis_url)
    try:
        first = project.app(autoload=None)
        async with first:
            before = {c["id"] for c in await admin.client_list(_type="pubsub")}
            second = project.app(autoload=None)
            async with second:
                theirs = [
                    c["id"]
                    for c in await admin.client_list(_type="pubsub")
                    if c["id"] not in before
                ]
                assert theirs, "the second process has no subscription to drop"
                one, two = first.services.get("policy"), second.services.get("policy")
                actor = Actor(USER, GUILD, None)
                assert (await two.explain("fun.roll", actor)).decision.allowed  # cached
                for client_id in theirs:
                    await admin.client_kill_filter(_id=client_id)
                await one.add(Rule("fun.roll", Action.DENY, Scope.USER, USER, 0, GUILD))
                async with asyncio.timeout(10):
                    while (await two.explain("fun.roll", actor)).decision.allowed:
                        await asyncio.sleep(0.05)
                other = Actor(USER, GUILD + 1, None)
                assert (await two.explain("fun.dance", other)).decision.allowed  # cached again
                await one.add(Rule("fun.*", Action.DENY, Scope.GLOBAL, None, 0, None))
                async with asyncio.timeout(10):
                    while (await two.explain("fun.dance", other)).decision.allowed:
                        await asyncio.sleep(0.05)
    finally:
        await admin.aclose()


async def test_the_resolution_table_through_the_database(project, database) -> None:
    """Every case of tests/test_policy_engine.py, stored as rows and decided by the service."""
    from sqlalchemy import delete

    from test_policy_engine import CASES, DECLARED
    from wisp.plugins.policy.models import PolicyRule

    setup_project(project, database)
    app = project.app(autoload=None)
    async with app:
        service = app.services.get("policy")
        service.declared = dict(DECLARED)
        db = app.services.get("db")
        for name, capability, actor, rules, allowed, decider in CASES:
            async with db.transaction() as s:
                await s.execute(delete(PolicyRule))
            service.invalidate()
            stored = [await service.add(r) for r in rules]
            explanation = await service.explain(capability, actor)
            assert explanation.decision.allowed is allowed, name
            if decider is None:
                assert explanation.rule is None, name
            else:
                assert explanation.rule == stored[decider], name
            fast = await service.explain(capability, actor, every_rule=False)
            assert fast.decision == explanation.decision, name


async def test_requires_capability_outside_commands(project, database) -> None:
    setup_project(project, database)
    app = project.app(autoload=None)

    @wisp.requires_capability("vault.open")
    async def open_vault(ctx: wisp.WispContext, amount: int) -> str:
        return f"opened {amount}"

    @wisp.command()
    async def heist(ctx) -> str:
        return await open_vault(ctx, 5)

    class P:
        @wisp.hookimpl
        def wisp_commands(self):
            return [heist]

    app.register(P(), "heist")
    async with app:
        from wisp.plugins.policy.engine import Action, Rule, Scope

        assert (
            await app.call("heist", guild_id=GUILD, user_id=USER)
        ).response.content == "opened 5"
        await app.services.get("policy").add(
            Rule("vault.*", Action.DENY, Scope.GUILD, GUILD, 0, GUILD)
        )
        out = await app.call("heist", guild_id=GUILD, user_id=USER)
        assert isinstance(out.error, wisp.PermissionDenied) and out.error.capability == "vault.open"
    with pytest.raises(RuntimeError, match="outside any invocation"):
        await open_vault(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs an async function"):
        wisp.requires_capability("x")(lambda: None)
