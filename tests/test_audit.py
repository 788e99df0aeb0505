"""The audit plugin on SQLite and PostgreSQL: one append-only log that policy,
rate-limit overrides, plugin switches and admin commands write to; ``wisp
audit list``; export; the policy plugin without it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

import wisp
from wisp.cli.main import main

pytestmark = pytest.mark.needs_plugin("audit")

GUILD, USER = 100, 300


def setup_project(project, database, plugins: str, extra_toml: str = "") -> None:
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
        "bot/admin.py",
        """
        import wisp

        @wisp.command(capability="moderation.ban")
        async def ban(ctx, user: int, reason: str = "") -> str:
            return f"banned {user}"

        @wisp.command(capability="moderation.kick", audit=False)
        async def kick(ctx, user: int) -> str:
            return f"kicked {user}"

        @wisp.command(audit=True)
        async def announce(ctx, text: str) -> str:
            if text == "boom":
                raise RuntimeError("boom")
            return "sent"

        @wisp.command()
        async def roll(ctx) -> str:
            return "rolled"
    """,
    )


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def cli(capsys, *args: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(run_cli, capsys, *args)


@pytest.mark.needs_plugin("policy", "storage")
async def test_admin_commands_and_policy_changes_share_one_log(project, database) -> None:
    setup_project(project, database, '"storage", "policy", "audit"')
    app = project.app(autoload=None)
    async with app:
        order = [m.name for m in app.compiled(app.commands["ban"]).middleware]
        assert order == ["audit", "policy"]  # outside policy: refusals are recorded
        assert [m.name for m in app.compiled(app.commands["roll"]).middleware] == []
        assert [m.name for m in app.compiled(app.commands["kick"]).middleware] == ["policy"]
        from wisp.plugins.policy.engine import Action, Rule, Scope

        ok = await app.call("ban", {"user": "1", "reason": "spam"}, guild_id=GUILD, user_id=USER)
        assert ok.ok
        rule = await app.services.get("policy").add(
            Rule("moderation.*", Action.DENY, Scope.GUILD, GUILD, 0, GUILD), by=7
        )
        denied = await app.call("ban", {"user": "2"}, guild_id=GUILD, user_id=USER)
        assert isinstance(denied.error, wisp.PermissionDenied)
        failed = await app.call("announce", {"text": "boom"}, guild_id=GUILD, user_id=USER)
        assert isinstance(failed.error, RuntimeError)
        assert (await app.call("roll", guild_id=GUILD, user_id=USER)).ok
        assert (await app.call("kick", {"user": "3"}, guild_id=GUILD + 1, user_id=USER)).ok

        entries = await app.services.get("audit").list()
    summary = [(e["action"], e["outcome"], e["actor_id"], e["guild_id"]) for e in entries]
    assert summary == [
        ("command.ban", "ok", USER, GUILD),
        ("policy.set", None, 7, GUILD),
        ("command.ban", "denied", USER, GUILD),
        ("command.announce", "error", USER, GUILD),
    ]
    first, change, refused, error = entries
    assert first["request_id"] == ok.request_id
    assert first["target"] is None  # the action names the command
    assert first["detail"] == {"invocation": "cli", "options": {"user": 1, "reason": "spam"}}
    assert refused["request_id"] == denied.request_id
    assert refused["detail"]["error"] == "PermissionDenied"
    assert error["detail"]["error"] == "RuntimeError"
    assert change["target"] == f"rule:{rule.id}"
    assert change["before"] is None
    assert change["after"]["capability"] == "moderation.*"
    assert change["request_id"] is None  # not made inside an invocation
    assert datetime.fromisoformat(first["at"]).tzinfo is not None


@pytest.mark.needs_plugin("policy", "storage")
async def test_a_slash_policy_change_carries_its_commands_request_id(project, database) -> None:
    setup_project(project, database, '"storage", "policy", "audit"')
    app = project.app(autoload=None)
    async with app:
        from wisp.plugins.policy.engine import Action, Rule, Scope

        await app.services.get("policy").add(
            Rule("policy.manage", Action.ALLOW, Scope.USER, USER, 0, GUILD)
        )
        out = await app.call(
            "policy set",
            {"capability": "fun.roll", "decision": "deny"},
            guild_id=GUILD,
            user_id=USER,
        )
        assert out.ok, out.response
        entries = await app.services.get("audit").list(request_id=out.request_id)
    assert [(e["action"], e["actor_id"]) for e in entries] == [
        ("policy.set", USER),  # written in the change's transaction, inside the command
        ("command.policy set", USER),  # written when the command ended
    ]


class RefusingAudit:
    """A second audit listener that fails on transactional records."""

    @wisp.hookimpl
    def wisp_audit_record(self, record, session):
        if session is not None:
            raise RuntimeError("audit store down")


@pytest.mark.needs_plugin("policy", "storage")
async def test_a_change_commits_only_with_its_record(project, database) -> None:
    setup_project(project, database, '"storage", "policy", "audit"')
    app = project.app(autoload=None)
    app.register(RefusingAudit(), "refusing")
    async with app:
        from wisp.plugins.policy.engine import Action, Rule, Scope

        policy = app.services.get("policy")
        with pytest.raises(RuntimeError, match="audit store down"):
            await policy.add(Rule("fun.roll", Action.DENY, Scope.GUILD, GUILD, 0, GUILD))
        assert await policy.rules(GUILD) == []  # rolled back with its record
        assert await app.services.get("audit").list() == []
        # A record outside a transaction that fails is logged; the command stands.
        out = await app.call("ban", {"user": "1"}, guild_id=GUILD, user_id=USER)
        assert out.ok


@pytest.mark.needs_plugin("basics", "features", "policy", "ratelimit", "storage")
async def test_blocking_audit_only_drops_the_records(project, database, monkeypatch, capsys):
    setup_project(project, database, '"storage", "policy", "features", "ratelimit", "basics"')
    monkeypatch.chdir(project.root)
    app = project.app(autoload=None)
    async with app:
        assert "audit" not in app.services
        assert "audit" not in [m.name for m in app.compiled(app.commands["ban"]).middleware]
        from wisp.plugins.policy.engine import Action, Rule, Scope

        rule = await app.services.get("policy").add(
            Rule("fun.roll", Action.DENY, Scope.GUILD, GUILD, 0, GUILD)
        )
        assert rule.id is not None
        assert (await app.call("ban", {"user": "1"}, guild_id=GUILD, user_id=USER)).ok
    code, _, err = await cli(capsys, "ratelimit", "set", "ping", "3/10s per user", "--guild", "1")
    assert code == 0, err
    code, _, err = await cli(capsys, "plugins", "disable", "basics", "--guild", "1")
    assert code == 0, err
    code, _, err = await cli(capsys, "policy", "audit")
    assert code == 2
    assert "audit plugin, which is not loaded" in err
    with pytest.raises(SystemExit):
        run_cli(capsys, "audit", "list")  # no such subcommand without the plugin


@pytest.mark.needs_plugin("basics", "features", "ratelimit", "storage")
async def test_override_and_switch_changes_from_the_shell(project, database, monkeypatch, capsys):
    setup_project(project, database, '"storage", "features", "ratelimit", "basics", "audit"')
    monkeypatch.chdir(project.root)
    steps = [
        ("ratelimit", "set", "ping", "3/10s per user", "--guild", "5"),
        ("ratelimit", "set", "ping", "1/m per guild", "--guild", "5"),
        ("ratelimit", "reset", "ping", "--guild", "5"),
        ("ratelimit", "reset", "ping", "--guild", "5"),  # nothing to reset: no record
        ("plugins", "disable", "basics", "--guild", "5"),
        ("plugins", "enable", "basics", "--guild", "6"),
    ]
    for args in steps:
        code, _, err = await cli(capsys, *args)
        assert code == 0, (args, err)
    code, out, err = await cli(capsys, "audit", "list", "--json")
    assert code == 0, err
    entries = [json.loads(line) for line in out.splitlines()]
    assert [
        (e["action"], e["target"], e["guild_id"], e["before"], e["after"]) for e in entries
    ] == [
        ("ratelimit.set", "ping", 5, None, ["3/10s per user"]),
        ("ratelimit.set", "ping", 5, ["3/10s per user"], ["1/60s per guild"]),
        ("ratelimit.reset", "ping", 5, ["1/60s per guild"], None),
        ("features.disable", "basics", 5, {"enabled": True}, {"enabled": False}),
        ("features.enable", "basics", 6, {"enabled": True}, {"enabled": True}),
    ]
    assert all(e["actor_id"] is None and e["request_id"] is None for e in entries)


@pytest.mark.needs_plugin("storage")
async def test_audit_list_filters_and_formats(project, database, monkeypatch, capsys) -> None:
    setup_project(project, database, '"storage", "audit"')
    monkeypatch.chdir(project.root)
    app = project.app(autoload=None)
    from wisp.plugins.audit.api import AuditRecord

    old = datetime.now(UTC) - timedelta(days=3)
    async with app:
        audit = app.services.get("audit")
        await audit.write(AuditRecord(action="policy.set", guild_id=1, actor_id=9, at=old))
        await audit.write(AuditRecord(action="policy.remove", guild_id=1, before={"id": 1}))
        await audit.write(AuditRecord(action="ratelimit.set", guild_id=2, target="ping"))
        await audit.write(AuditRecord(action="policy_x", guild_id=1))

    async def actions(*args: str) -> list[str]:
        code, out, err = await cli(capsys, "audit", "list", "--json", *args)
        assert code == 0, err
        return [json.loads(line)["action"] for line in out.splitlines()]

    assert await actions() == ["policy.set", "policy.remove", "ratelimit.set", "policy_x"]
    assert await actions("--guild", "1") == ["policy.set", "policy.remove", "policy_x"]
    assert await actions("--since", "1d") == ["policy.remove", "ratelimit.set", "policy_x"]
    since = (old + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")  # naive: UTC
    assert await actions("--since", since) == ["policy.remove", "ratelimit.set", "policy_x"]
    assert await actions("--since", "2000-01-01") == await actions()
    assert await actions("--action", "policy.") == ["policy.set", "policy.remove"]
    assert await actions("--action", "policy_x") == ["policy_x"]
    assert await actions("--limit", "2") == ["ratelimit.set", "policy_x"]  # the newest two

    code, out, _ = await cli(capsys, "audit", "list", "--guild", "1", "--action", "policy.remove")
    assert code == 0
    lines = out.splitlines()
    assert "policy.remove" in lines[0] and "in guild 1" in lines[0] and "by -" in lines[0]
    assert lines[1] == '    before: {"id": 1}'

    for args, message in [
        (("--since", "yesterday"), "'yesterday' is not a time"),
        (("--limit", "0"), "0 must be at least 1"),
        (("--guild", "x"), "invalid int value: 'x'"),
    ]:
        with pytest.raises(SystemExit) as exc:
            run_cli(capsys, "audit", "list", *args)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.needs_plugin("policy", "storage")
async def test_the_log_takes_part_in_export_and_import(project, database) -> None:
    setup_project(project, database, '"storage", "policy", "audit"')
    app = project.app(autoload=None)
    from wisp.plugins.storage.transfer import export_document, import_document

    async with app:
        from wisp.plugins.policy.engine import Action, Rule, Scope

        policy = app.services.get("policy")
        await policy.add(Rule("fun.roll", Action.DENY, Scope.GUILD, GUILD, 0, GUILD), by=1)
        await policy.add(Rule("fun.x", Action.DENY, Scope.GUILD, GUILD + 1, 0, GUILD + 1))
        assert (await app.call("ban", {"user": "1"}, guild_id=GUILD, user_id=USER)).ok
        doc = await export_document(app)
        rows = doc["sections"]["audit_log"]
        assert [r["action"] for r in rows] == ["policy.set", "policy.set", "command.ban"]
        assert json.loads(json.dumps(doc)) == doc  # JSON-ready
        guild_doc = await export_document(app, guild_id=GUILD)
        assert [r["guild_id"] for r in guild_doc["sections"]["audit_log"]] == [GUILD, GUILD]
        # wipe the log by importing an empty one, then restore it: same document
        empty = {**doc, "sections": {**doc["sections"], "audit_log": []}}
        await import_document(app, empty)
        assert await app.services.get("audit").list() == []
        await import_document(app, doc)
        assert await export_document(app) == doc
        # the next record gets a fresh id after the restored ones
        assert (await app.call("ban", {"user": "2"}, guild_id=GUILD, user_id=USER)).ok
        ids = [e["id"] for e in await app.services.get("audit").list()]
        assert ids == sorted(set(ids)) and len(ids) == 4


@pytest.mark.needs_plugin("policy", "storage")
async def test_earlier_policy_audit_rows_move_into_the_log(project, database) -> None:
    # A database from before the audit plugin: rule changes in policy_audit.
    setup_project(project, database, '"storage", "policy"')
    app = project.app(autoload=None)
    async with app:
        from wisp.plugins.policy.models import PolicyAudit

        async with app.services.get("db").transaction() as s:
            s.add(
                PolicyAudit(
                    actor_id=4,
                    guild_id=GUILD,
                    change="set",
                    before=None,
                    after={"capability": "fun.roll", "id": 1},
                )
            )
    setup_project(project, database, '"storage", "policy", "audit"')
    app = project.app(autoload=None)
    async with app:
        entries = await app.services.get("audit").list()
        legacy = await app.services.get("policy").audit(GUILD)
    assert [(e["action"], e["actor_id"], e["guild_id"], e["after"]) for e in entries] == [
        ("policy.set", 4, GUILD, {"capability": "fun.roll", "id": 1})
    ]
    assert [(e["change"], e["actor_id"]) for e in legacy] == [("set", 4)]


async def test_without_storage_the_log_is_off_and_says_so(project, monkeypatch, capsys) -> None:
    project.write("wisp.toml", '[wisp]\nautoload = false\nplugins = ["audit"]\n')
    monkeypatch.chdir(project.root)
    app = project.app(autoload=None)
    async with app:
        assert "audit" not in app.services
        # Emitting still works: the hook finds no service and drops the record.
        from wisp.plugins.audit.api import record

        assert (await record(app, "x.y", target="t")) is not None
    code, _, err = await cli(capsys, "audit", "list")
    assert code == 2
    assert "the audit log is off: it needs the storage plugin" in err


@pytest.mark.needs_plugin("policy", "storage")
async def test_deleting_a_user_erases_them_as_actor_and_keeps_the_entries(
    project, database
) -> None:
    setup_project(project, database, '"storage", "policy", "audit"')
    app = project.app(autoload=None)
    async with app:
        assert (await app.call("ban", {"user": "1"}, guild_id=GUILD, user_id=USER)).ok
        assert (await app.call("ban", {"user": "2"}, guild_id=GUILD + 1, user_id=USER)).ok
        assert (await app.call("ban", {"user": "3"}, guild_id=GUILD, user_id=USER + 1)).ok
        from wisp.cli.data import delete_user_data

        removed, errors = await delete_user_data(app, USER, GUILD)
        assert errors == {} and removed["audit"] == {"audit entries anonymised": 1}
        entries = await app.services.get("audit").list()
    actors = sorted((e["guild_id"], e["actor_id"] or 0) for e in entries)
    # The other guild's entry and the other user's stay as they were.
    assert actors == [(GUILD, 0), (GUILD, USER + 1), (GUILD + 1, USER)]
