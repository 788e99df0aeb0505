"""``wisp plugin new``: names, version ranges, refusals, and the generated plugin end to end.

The slow tests build the ``wisp-framework`` wheel once, install it into a fresh
virtualenv, generate a plugin with that venv's ``wisp`` (so the templates must
ship in the wheel), install the plugin beside it and run its own tests, its
lint, ``wisp plugins`` and ``wisp migrate check``: the template cannot rot.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import wisp
from wisp.cli.main import main
from wisp.cli.scaffold import (
    ScaffoldError,
    api_range,
    framework_requirement,
    parse_name,
    render,
)

ROOT = Path(__file__).resolve().parents[1]

EXPECTED_FILES = [
    ".gitignore",
    "CHANGELOG.md",
    "README.md",
    "hatch_build.py",
    "noxfile.py",
    "pyproject.toml",
    "src/wisp_hello_world/__init__.py",
    "src/wisp_hello_world/config.py",
    "src/wisp_hello_world/migrations/{rev}_greetings.py",
    "src/wisp_hello_world/models.py",
    "src/wisp_hello_world/py.typed",
    "tests/test_wisp_hello_world.py",
]


# -- names and ranges -----------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "plugin", "distribution", "module", "command", "title"),
    [
        ("hello", "hello", "wisp-hello", "wisp_hello", "hello", "Hello"),
        (
            "hello-world",
            "hello_world",
            "wisp-hello-world",
            "wisp_hello_world",
            "hello-world",
            "HelloWorld",
        ),
        ("tag_v2", "tag_v2", "wisp-tag-v2", "wisp_tag_v2", "tag-v2", "TagV2"),
        ("wisp-foo", "foo", "wisp-foo", "wisp_foo", "foo", "Foo"),
        ("wisp_foo", "foo", "wisp-foo", "wisp_foo", "foo", "Foo"),
        ("class", "class", "wisp-class", "wisp_class", "class", "Class"),
    ],
)
def test_names_derived_from_the_plugin_name(
    typed: str, plugin: str, distribution: str, module: str, command: str, title: str
) -> None:
    names = parse_name(typed)
    assert (names.plugin, names.distribution, names.module, names.command, names.title) == (
        plugin,
        distribution,
        module,
        command,
        title,
    )
    assert names.module.isidentifier()


@pytest.mark.parametrize(
    "bad", ["", "Foo", "foo bar", "1foo", "foo--bar", "foo-", "_foo", "wisp-", "föö", "foo.bar"]
)
def test_invalid_names_are_refused(bad: str) -> None:
    with pytest.raises(
        ScaffoldError, match="^" + re.escape(f"{bad!r} is not a valid plugin name: use lower-case")
    ):
        parse_name(bad)


def test_a_name_longer_than_a_slash_command_is_refused() -> None:
    parse_name("a" * 32)
    with pytest.raises(ScaffoldError, match=r"is too long: a plugin name has at most 32"):
        parse_name("a" * 33)


@pytest.mark.parametrize(
    ("version", "requirement", "lowest"),
    [
        # Before 1.0 a minor release may break plugins: stay within it.
        ("0.1.0.dev0", "wisp-framework>=0.1.dev0,<0.2", "0.1.dev0"),
        ("0.1.0rc1", "wisp-framework>=0.1.dev0,<0.2", "0.1.dev0"),
        ("0.1.0", "wisp-framework>=0.1,<0.2", "0.1"),
        ("0.3.2", "wisp-framework>=0.3,<0.4", "0.3"),
        # From 1.0: the releases that keep the plugin API's major version.
        ("1.0.0", "wisp-framework>=1.0,<2", "1.0"),
        ("1.4.2", "wisp-framework>=1.4,<2", "1.4"),
        ("2.0.0.dev3", "wisp-framework>=2.0.dev0,<3", "2.0.dev0"),
        ("2.3.1.dev4", "wisp-framework>=2.3.dev0,<3", "2.3.dev0"),
    ],
)
def test_framework_requirement(version: str, requirement: str, lowest: str) -> None:
    assert framework_requirement(version) == (requirement, lowest)
    # As pip and uv read it: the version it was made from satisfies it (pre-releases too).
    assert Requirement(requirement).specifier.contains(version)


def test_the_running_framework_satisfies_its_own_requirement() -> None:
    requirement, _ = framework_requirement(wisp.__version__)
    assert Requirement(requirement).specifier.contains(wisp.__version__)


def test_api_range() -> None:
    assert api_range("1.0") == ">=1.0,<2"
    assert api_range("1.3") == ">=1.3,<2"
    assert wisp.PluginMetadata("x", api=api_range(wisp.PLUGIN_API_VERSION)).supports()


# -- the command, in process ------------------------------------------------------


def test_plugin_new_writes_the_distribution(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugin", "new", "hello-world", "--dir", str(tmp_path / "out")]) == 0
    target = tmp_path / "out" / "wisp-hello-world"
    out = capsys.readouterr().out
    assert out.startswith(f"created wisp-hello-world in {target}\n")

    written = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    [migration] = (target / "src/wisp_hello_world/migrations").glob("*.py")
    rev = migration.name.split("_")[0]
    assert written == sorted(f.format(rev=rev) for f in EXPECTED_FILES)
    for rel in written:
        text = (target / rel).read_text(encoding="utf-8")
        assert "{{" not in text and "__module__" not in text, rel
        assert f"  {rel}\n" in out
        if rel.endswith(".py"):
            compile(text, rel, "exec")

    project = tomllib.loads((target / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == "wisp-hello-world"
    assert project["entry-points"]["wisp"] == {"hello_world": "wisp_hello_world"}
    assert "Framework :: Wisp" in project["classifiers"]
    [framework] = [r for r in project["dependencies"] if r.startswith("wisp-framework")]
    assert framework == framework_requirement(wisp.__version__)[0]

    plugin = (target / "src/wisp_hello_world/__init__.py").read_text(encoding="utf-8")
    assert 'PLUGIN = "hello_world"' in plugin and 'COMMAND = "hello-world"' in plugin
    assert f'api="{api_range(wisp.PLUGIN_API_VERSION)}"' in plugin
    text = migration.read_text(encoding="utf-8")
    assert f'revision: str = "{rev}"' in text
    assert 'branch_labels: str | Sequence[str] | None = ("hello_world",)' in text
    assert 'TABLE = "hello_world_greetings"' in text
    nox_file = (target / "noxfile.py").read_text(encoding="utf-8")
    assert f'LOWEST = "wisp-framework=={framework_requirement(wisp.__version__)[1]}"' in nox_file


def test_every_plugin_gets_its_own_migration_revision() -> None:
    names = parse_name("hello")
    revisions = {next(p for p in render(names) if "/migrations/" in p) for _ in range(5)}
    assert len(revisions) == 5  # one Alembic namespace for every installed plugin


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Hello"], "wisp plugin new: 'Hello' is not a valid plugin name: use lower-case"),
        (["hello world"], "'hello world' is not a valid plugin name"),
        (
            ["jobs"],
            "the plugin name 'jobs' is taken by wisp-framework (entry point "
            "'wisp.plugins.jobs'); pick another name",
        ),
        (["wisp-storage"], "the plugin name 'storage' is taken by wisp-framework"),
    ],
)
def test_bad_names_exit_2_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["plugin", "new", *args, "--dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "out").exists()


def test_an_existing_directory_is_refused_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "wisp-hello"
    target.mkdir()
    (target / "mine.txt").write_text("keep me", encoding="utf-8")
    assert main(["plugin", "new", "hello", "--dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"wisp plugin new: {str(target)!r} already exists; remove it, or choose another "
        "name or --dir\n"
    )
    assert [p.name for p in target.iterdir()] == ["mine.txt"]


def test_a_dir_that_is_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("", encoding="utf-8")
    assert main(["plugin", "new", "hello", "--dir", str(afile)]) == 2
    assert f"--dir {str(afile)!r} is not a directory" in capsys.readouterr().err


def test_a_failed_write_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[Path] = []
    write_text = Path.write_text

    def full_disk(self: Path, text: str, encoding: str | None = None) -> int:
        if len(written) == 3:
            raise OSError(28, "No space left on device", str(self))
        written.append(self)
        return write_text(self, text, encoding=encoding)

    monkeypatch.setattr(Path, "write_text", full_disk)
    assert main(["plugin", "new", "hello", "--dir", str(tmp_path)]) == 1
    assert "wisp plugin new: cannot write the plugin: [Errno 28] No space left on device" in (
        capsys.readouterr().err
    )
    assert len(written) == 3 and list(tmp_path.iterdir()) == []


def test_plugin_without_action_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["plugin"])
    assert exc.value.code == 2
    assert "the following arguments are required: ACTION" in capsys.readouterr().err


# -- end to end: built wheel, fresh venv --------------------------------------------


def _uv() -> str:
    """uv: $UV, beside this interpreter (the nox sessions install it), or on PATH."""
    here = Path(sys.executable).parent / "uv"
    for candidate in (os.environ.get("UV"), str(here), "uv"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    pytest.fail("uv is needed to build venvs for the scaffold test: pip install uv")


def _run(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env if env is not None else _clean_env(),
    )
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that changes what Wisp or Python loads."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WISP_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    return {**env, **extra}


@pytest.fixture(scope="session")
def framework_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wisp-framework wheel of this checkout, built once per session."""
    out = tmp_path_factory.mktemp("framework-wheel")
    _run(_uv(), "build", "--wheel", "--quiet", "--out-dir", out, ROOT)
    (wheel,) = out.glob("wisp_framework-*.whl")
    return wheel


class Generated:
    def __init__(self, root: Path, venv: Path) -> None:
        self.root = root
        self.venv = venv
        self.plugin = root / "wisp-hello-world"

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name


@pytest.fixture(scope="module")
def generated(framework_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Generated:
    root = tmp_path_factory.mktemp("scaffold")
    g = Generated(root, root / "venv")
    uv = _uv()
    _run(uv, "venv", "--quiet", "--python", sys.executable, g.venv)
    install = (uv, "pip", "install", "--quiet", "--python", g.bin("python"))
    # The framework as a plugin author gets it; nox and ruff for the generated project.
    _run(*install, f"{framework_wheel}[testing,postgres]", "nox", "ruff")
    # Generated by the installed wheel: its templates must have shipped.
    _run(g.bin("wisp"), "plugin", "new", "hello-world", "--dir", root, cwd=root)
    _run(*install, f"{framework_wheel}[testing,postgres]", f"{g.plugin}[test]")
    return g


@pytest.mark.slow
def test_generated_plugin_passes_its_own_tests(generated: Generated) -> None:
    pytest_ = (generated.bin("python"), "-m", "pytest", "-q", "-p", "no:cacheprovider")
    out = _run(*pytest_, cwd=generated.plugin)
    assert "6 passed" in out, out


@pytest.mark.slow
def test_generated_plugin_is_listed_and_loaded(generated: Generated) -> None:
    bot = generated.root / "bot"
    bot.mkdir()
    listed = _run(generated.bin("wisp"), "plugins", cwd=bot)
    [row] = [line for line in listed.splitlines() if line.startswith("hello_world ")]
    assert "wisp-hello-world 0.1.0" in row and "third-party" in row
    assert "wisp_storage_models" in row and "wisp_delete_user_data" in row

    report = json.loads(_run(generated.bin("wisp"), "plugins", "--json", cwd=bot))
    [entry] = [p for p in report["plugins"] if p["name"] == "hello_world"]
    assert entry["status"] == "loaded"
    assert (entry["distribution"], entry["version"], entry["origin"]) == (
        "wisp-hello-world",
        "0.1.0",
        "third-party",
    )
    assert entry["metadata"]["api"] == api_range(wisp.PLUGIN_API_VERSION)
    assert entry["metadata"]["commands"] == ["hello-world"]
    assert entry["metadata"]["user_data"] is True

    call = (generated.bin("wisp"), "--log-level", "WARNING", "call", "--guild", "7")
    called = _run(*call, "hello-world", "name=Ada", cwd=bot)
    assert called == "Hello, Ada! (greeting #1 in this server)\n"


async def _pg_schema(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_generated_migration_matches_the_model(
    generated: Generated, backend: str, request: pytest.FixtureRequest
) -> None:
    bot = generated.root / f"migrate-{backend}"
    bot.mkdir()
    env = _clean_env()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    pg_url = ""
    if backend == "postgresql":
        pg_url = request.getfixturevalue("pg_url")  # skipped unset, failed unreachable
        asyncio.run(_pg_schema(pg_url, f"CREATE SCHEMA {schema}"))
        env = _clean_env(WISP_STORAGE__URL=pg_url, WISP_STORAGE__SCHEMA=schema)
    try:
        wisp_ = (generated.bin("wisp"), "--log-level", "WARNING", "migrate")
        upgraded = _run(*wisp_, cwd=bot, env=env)
        assert "upgraded hello_world: base -> " in upgraded
        assert _run(*wisp_, "check", cwd=bot, env=env).endswith("models and migrations agree\n")
    finally:
        if backend == "postgresql":
            asyncio.run(_pg_schema(pg_url, f"DROP SCHEMA {schema} CASCADE"))


@pytest.mark.slow
def test_generated_project_is_lint_clean_and_lists_its_nox_sessions(
    generated: Generated,
) -> None:
    ruff = generated.bin("ruff")
    _run(ruff, "check", "--no-cache", ".", cwd=generated.plugin)
    _run(ruff, "format", "--no-cache", "--check", ".", cwd=generated.plugin)
    sessions = _run(generated.bin("nox"), "--list", cwd=generated.plugin)
    for name in ("tests(wisp='lowest')", "tests(wisp='latest')", "local", "lint"):
        assert f"{name} " in sessions or f"{name}\n" in sessions, sessions
