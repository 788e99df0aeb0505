"""Shared fixtures: isolated environment, throwaway projects, log capture."""

from __future__ import annotations

import os
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

import wisp
from wisp.testing import WispProject

# Variables a developer may have set that would change what the kernel loads.
_ISOLATE = (
    "WISP_PLUGINS",
    "WISP_DISABLE_PLUGINS",
    "WISP_DISABLE_PLUGIN_AUTOLOAD",
    "WISP_TRACE",
    "WISP_STRICT_PLUGINS",
)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("WISP_") and not name.startswith("WISP_TEST_"):
            monkeypatch.delenv(name)
    for name in _ISOLATE:
        monkeypatch.delenv(name, raising=False)
    modules = set(sys.modules)
    path = list(sys.path)
    yield
    # `wisp` CLI runs point loguru at the captured stderr of their test: reset.
    logger.remove()
    logger.add(lambda message: sys.stderr.write(message), level="INFO")
    # Local command files and wispconf.py are imported by module name: forget them.
    for name in set(sys.modules) - modules:
        mod = sys.modules[name]
        where = str(getattr(mod, "__file__", None)) + str(getattr(mod, "__path__", ""))
        if "/pytest-of-" in where:
            del sys.modules[name]
    sys.path[:] = path


class Project(WispProject):
    """``wisp.testing``'s project, reading the (isolated) environment: tests set
    ``WISP_*`` variables with monkeypatch."""

    def app(self, *, autoload: bool | None = False, **kwargs: Any) -> wisp.Wisp:
        kwargs.setdefault("env", None)
        return super().app(autoload=autoload, **kwargs)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "proj"
    root.mkdir()
    return Project(root)


@pytest.fixture
def log_lines() -> Iterator[list[dict[str, Any]]]:
    """Every loguru record emitted during the test, as dicts."""
    records: list[dict[str, Any]] = []
    wisp.logs.install_context_patcher()

    def sink(message: Any) -> None:
        r = message.record
        records.append(
            {
                "level": r["level"].name,
                "message": r["message"],
                "extra": dict(r["extra"]),
                "exception": r["exception"],
            }
        )

    handler = logger.add(sink, level="DEBUG")
    yield records
    logger.remove(handler)


MakePlugin = Callable[..., object]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Install a fake distribution (dist-info + modules) on sys.path, in process."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))

    def install(
        dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]
    ) -> Path:
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8"
        )
        eps = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
        (info / "entry_points.txt").write_text(f"[wisp]\n{eps}\n", encoding="utf-8")
        for mod, text in modules.items():
            path = root / (mod.replace(".", "/") + ".py")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return root

    return install


@pytest.fixture(scope="session")
def wisp_exe() -> str:
    """The installed ``wisp`` console script of the interpreter running the tests."""
    exe = Path(sys.executable).parent / "wisp"
    assert exe.exists(), f"console script missing: {exe} (is the project installed?)"
    return str(exe)


PG_URL = os.environ.get("WISP_TEST_DATABASE_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request, project):
    """A database URL and schema for one test: a SQLite file, or a fresh PG schema."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{project.root / 'test.sqlite3'}", ""
        return
    if not PG_URL:
        pytest.skip("WISP_TEST_DATABASE_URL is not set")
    import asyncpg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        yield PG_URL, schema
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()
