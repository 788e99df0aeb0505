"""Shared fixtures: isolated environment, throwaway projects, log capture."""

from __future__ import annotations

import os
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

import wisp
from wisp.testing import WispProject


def _bundled_plugins() -> list[str]:
    """Entry-point names of the plugins shipped in ``wisp-framework``."""
    from importlib.metadata import entry_points

    return sorted(
        ep.name
        for ep in entry_points(group="wisp")
        if ep.dist is not None and ep.dist.metadata["Name"] == "wisp-framework"
    )


def _session_block() -> tuple[str, ...]:
    """``WISP_TEST_BLOCK=a,b`` (``*``: every bundled plugin), read once at import,
    before ``_isolated_env`` clears ``WISP_*``: the nox matrix runs the suite with
    these plugins blocked in every app, and skips tests marked as needing one."""
    raw = os.environ.get("WISP_TEST_BLOCK", "")
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if "*" in names:
        return tuple(_bundled_plugins())
    unknown = sorted(set(names) - set(_bundled_plugins()))
    if unknown:
        raise pytest.UsageError(f"WISP_TEST_BLOCK names no bundled plugin: {', '.join(unknown)}")
    return tuple(names)


#: Bundled plugins blocked for the whole run (``WISP_TEST_BLOCK``).
SESSION_BLOCK = _session_block()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip tests whose ``needs_plugin`` marker names a blocked plugin."""
    if not SESSION_BLOCK:
        return
    for item in items:
        needed = [n for m in item.iter_markers("needs_plugin") for n in m.args]
        blocked = [n for n in needed if n in SESSION_BLOCK]
        if blocked:
            reason = f"needs plugin {', '.join(sorted(set(blocked)))} (WISP_TEST_BLOCK)"
            item.add_marker(pytest.mark.skip(reason=reason))


def _blocking_init(init: Callable[..., None]) -> Callable[..., None]:
    def __init__(self: wisp.Wisp, *args: Any, block: Any = (), **kwargs: Any) -> None:
        init(self, *args, block=(*block, *SESSION_BLOCK), **kwargs)

    return __init__


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
    if SESSION_BLOCK:
        # Every app the test makes (in process, or a `wisp` subprocess given this
        # environment) blocks the session's plugins.
        monkeypatch.setattr(wisp.Wisp, "__init__", _blocking_init(wisp.Wisp.__init__))
        monkeypatch.setenv("WISP_DISABLE_PLUGINS", ",".join(SESSION_BLOCK))
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
REDIS_URL = os.environ.get("WISP_TEST_REDIS_URL")

#: A service variable's probe result, once per test process: "" or the error.
_PROBED: dict[str, str] = {}


def _reachable(variable: str, service: str, url: str, probe: Callable[[str], None]) -> str:
    """``url`` once ``probe`` reached it; the first probe's result is kept, so each
    test does not reconnect (nor wait out a timeout) just to check."""
    if variable not in _PROBED:
        try:
            probe(url)
        except Exception as exc:
            _PROBED[variable] = repr(exc)
        else:
            _PROBED[variable] = ""
    if _PROBED[variable]:
        pytest.fail(f"{variable} is set but {service} is unreachable: {_PROBED[variable]}")
    return url


def _ping_redis(url: str) -> None:
    import redis

    with redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5) as client:
        client.ping()


def _connect_postgresql(url: str) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import asyncpg

    async def connect() -> None:
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        await (await asyncpg.connect(dsn, timeout=5)).close()

    # A loop of its own, in a thread: async tests ask for the fixture in a running loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(connect())).result()


@pytest.fixture
def redis_url() -> str:
    """``WISP_TEST_REDIS_URL``: skipped when unset, failed when set but unreachable."""
    if not REDIS_URL:
        pytest.skip("WISP_TEST_REDIS_URL is not set")
    return _reachable("WISP_TEST_REDIS_URL", "Redis", REDIS_URL, _ping_redis)


@pytest.fixture
async def start_redis_service(redis_url: str) -> AsyncIterator[Callable[[], Awaitable[Any]]]:
    """``await start_redis_service()``: a started ``redis`` service on
    ``WISP_TEST_REDIS_URL``, as the redis plugin makes it; each one is stopped
    when the test ends."""
    from wisp.plugins.redis import RedisService

    started: list[Any] = []

    async def start() -> Any:
        service = RedisService(redis_url)
        await service.start()
        started.append(service)
        return service

    yield start
    for service in reversed(started):
        await service.stop()


@pytest.fixture
def pg_url() -> str:
    """``WISP_TEST_DATABASE_URL`` (``postgresql+asyncpg://``): skipped when unset,
    failed when set but unreachable."""
    if not PG_URL:
        pytest.skip("WISP_TEST_DATABASE_URL is not set")
    return _reachable("WISP_TEST_DATABASE_URL", "PostgreSQL", PG_URL, _connect_postgresql)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request, project):
    """A database URL and schema for one test: a SQLite file, or a fresh PG schema
    (``pg_url``: skipped when unset, failed when unreachable)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{project.root / 'test.sqlite3'}", ""
        return
    url = request.getfixturevalue("pg_url")
    import asyncpg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        yield url, schema
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


NATS_URL = os.environ.get("WISP_TEST_NATS_URL")


@pytest.fixture
def nats_url() -> str:
    """``WISP_TEST_NATS_URL`` (a NATS server with JetStream): skipped when unset,
    failed when set but unreachable or without JetStream."""
    if not NATS_URL:
        pytest.skip("WISP_TEST_NATS_URL is not set")
    import json
    import socket
    import urllib.parse

    where = urllib.parse.urlsplit(NATS_URL.split(",")[0])
    try:
        with socket.create_connection((where.hostname, where.port or 4222), timeout=3) as sock:
            line = sock.makefile("rb").readline()  # the server's INFO {...}
        info = json.loads(line.partition(b" ")[2])
    except (OSError, ValueError) as exc:
        pytest.fail(f"WISP_TEST_NATS_URL is set but NATS is unreachable: {exc!r}")
    if not info.get("jetstream"):
        pytest.fail("WISP_TEST_NATS_URL is set but that NATS server has no JetStream (-js)")
    return NATS_URL
