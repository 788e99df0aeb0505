"""wispconf.py files: conftest semantics, scoped to their directory."""

from __future__ import annotations

import wisp
from wisp.pluginmanager import Origin

COMMANDS = {
    "bot/admin/ban.py": """
        import wisp

        @wisp.command(capability="moderation.ban")
        async def ban(ctx, user: int) -> str:
            await ctx.app.require(ctx, "moderation.ban")
            raise wisp.NotFound()
    """,
    "bot/fun/roll.py": """
        import wisp

        @wisp.command(capability="moderation.ban")
        async def roll(ctx) -> str:
            await ctx.app.require(ctx, "moderation.ban")
            raise wisp.NotFound()
    """,
}

ADMIN_WISPCONF = """
    import wisp

    @wisp.hookimpl
    def wisp_error_message(ctx, error):
        if isinstance(error, wisp.NotFound):
            return "admin: no such member"

    @wisp.hookimpl
    def wisp_policy_decide(ctx, capability):
        if capability == "moderation.ban" and ctx.user_id != 1:
            return wisp.Decision.deny("only user 1 bans here", source="bot/admin/wispconf.py")
"""


def make(project, **files: str) -> wisp.Wisp:
    project.write("wisp.toml", '[wisp]\ncommand_paths = ["bot"]\n')
    for rel, text in {**COMMANDS, **files}.items():
        project.write(rel, text)
    return project.app().configure()


async def test_nested_wispconf_applies_only_under_its_directory(project) -> None:
    app = make(project, **{"bot/admin/wispconf.py": ADMIN_WISPCONF})
    assert set(app.commands) == {"ban", "roll"}

    # Error message: overridden under bot/admin, default under bot/fun.
    out = await app.call("ban", {"user": "5"}, user_id=1)
    assert out.response.content == "admin: no such member"
    out = await app.call("roll", user_id=1)
    assert out.response.content == "Not found."

    # Policy decision: the admin wispconf denies user 2 in bot/admin only.
    out = await app.call("ban", {"user": "5"}, user_id=2)
    assert isinstance(out.error, wisp.PermissionDenied)
    assert "only user 1 bans here" in out.response.content
    out = await app.call("roll", user_id=2)
    assert isinstance(out.error, wisp.NotFound)


async def test_root_wispconf_applies_everywhere_and_deeper_wins(project) -> None:
    project.write(
        "wispconf.py",
        """
        import wisp

        @wisp.hookimpl
        def wisp_error_message(ctx, error):
            return "root says: " + type(error).__name__
    """,
    )
    app = make(project, **{"bot/admin/wispconf.py": ADMIN_WISPCONF})
    assert (await app.call("roll", user_id=1)).response.content == "root says: NotFound"
    assert (
        await app.call("ban", {"user": "1"}, user_id=1)
    ).response.content == "admin: no such member"

    # Bundled/installed commands (outside the project) also see the root wispconf.
    @wisp.command()
    async def outside(ctx) -> str:
        raise wisp.UserError("x")

    app2 = project.app()
    app2.register(type("P", (), {"wisp_commands": wisp.hookimpl(lambda self: [outside])})(), "p")
    app2.configure()
    assert (await app2.call("outside")).response.content == "root says: UserError"


def test_wispconf_and_command_files_are_registered_in_path_order(project) -> None:
    project.write("wispconf.py", "import wisp\n")
    project.write("bot/wispconf.py", "import wisp\n")
    app = make(project, **{"bot/admin/wispconf.py": ADMIN_WISPCONF})
    local = [(i.name, i.origin) for i in app.pluginmanager.plugins()]
    assert local == [
        ("wispconf.py", Origin.WISPCONF),
        ("bot/wispconf.py", Origin.WISPCONF),
        ("bot/admin/wispconf.py", Origin.WISPCONF),
        ("bot/admin/ban.py", Origin.LOCAL),
        ("bot/fun/roll.py", Origin.LOCAL),
    ]
    assert app.pluginmanager.info("bot/admin/wispconf.py").scope == project.root / "bot/admin"


def test_a_broken_wispconf_is_reported_with_path_and_line(project) -> None:
    app = make(
        project,
        **{
            "bot/admin/wispconf.py": "import wisp\n\n\nvalue = undefined_name + 1\n",
            "bot/fun/wispconf.py": "import wisp\n\ndef broken(:\n",
        },
    )
    failures = {f.name: f for f in app.pluginmanager.failures}
    admin = failures["bot/admin/wispconf.py"]
    assert admin.origin is Origin.WISPCONF and admin.stage == "import"
    assert "NameError" in admin.message
    assert f"{project.root / 'bot/admin/wispconf.py'}, line 4" in admin.message
    fun = failures["bot/fun/wispconf.py"]
    assert "SyntaxError" in fun.message
    assert f"{project.root / 'bot/fun/wispconf.py'}, line 3" in fun.message
    # The commands themselves still load.
    assert set(app.commands) == {"ban", "roll"}


def test_missing_command_path_is_a_reported_failure(project) -> None:
    project.write("wisp.toml", '[wisp]\ncommand_paths = ["nowhere"]\n')
    app = project.app().bootstrap()
    [failure] = app.pluginmanager.failures
    assert "nowhere" in failure.message and "not a directory" in failure.message
