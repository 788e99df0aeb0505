"""The health plugin on SQLite and PostgreSQL: readiness of every service,
``/healthz`` and ``/readyz`` over real HTTP, and ``wisp doctor``."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

import wisp
from wisp.cli.main import main

pytestmark = pytest.mark.needs_plugin("health", "storage")

REDIS_URL = os.environ.get("WISP_TEST_REDIS_URL")


def setup_project(project, database, health: str, plugins: str = '"storage", "health"') -> None:
    url, schema = database
    project.write(
        "wisp.toml",
        f"""
        [wisp]
        autoload = false
        plugins = [{plugins}]

        [storage]
        url = "{url}"
        schema = "{schema}"
        auto_migrate = true

        [health]
        {health}
    """,
    )


class Warming(wisp.BaseService):
    """A service that works but cannot serve until told so."""

    name = "warming"

    def __init__(self) -> None:
        super().__init__()
        self.warm = False

    async def ready(self) -> wisp.Health:
        return wisp.Health(self.warm, "caught up" if self.warm else "replaying the backlog")


class Hanging(wisp.BaseService):
    name = "hanging"

    async def ready(self) -> wisp.Health:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class Extra:
    def __init__(self, *services: wisp.Service) -> None:
        self.services = services

    @wisp.hookimpl
    def wisp_services(self):
        return list(self.services)


async def get(session: aiohttp.ClientSession, service, path: str) -> tuple[int, dict]:
    host, port = service.address
    async with session.get(f"http://{host}:{port}{path}") as response:
        return response.status, await response.json()


async def test_the_endpoint_is_off_by_default_and_local_when_on(project, database) -> None:
    setup_project(project, database, "")
    app = project.app(autoload=None)
    async with app:
        health = app.services.get("health")
        assert health.address is None  # nothing listens
        assert health.config.host == "127.0.0.1"
        assert (await health.ready()).detail == "HTTP off"
        ok, body = await health.readiness()  # still usable in process
        assert ok and body["services"]["db"]["ready"]
    setup_project(project, database, "http = true\nport = 0")
    app = project.app(autoload=None)
    async with app:
        host, port = app.services.get("health").address
        assert host == "127.0.0.1" and port > 0


async def test_healthz_and_readyz_over_http(project, database) -> None:
    # 2 s: a loaded machine (two xdist workers) can take 0.2 s to answer SELECT 1.
    setup_project(project, database, "http = true\nport = 0\ntimeout = 2")
    warming = Warming()
    app = project.app(autoload=None)
    app.register(Extra(warming), "extra")
    async with app, aiohttp.ClientSession() as session:
        health = app.services.get("health")
        assert await get(session, health, "/healthz") == (200, {"status": "ok", "state": "started"})
        status, body = await get(session, health, "/readyz")
        assert status == 503
        assert body["status"] == "not ready"
        assert body["services"]["warming"] == {"ready": False, "detail": "replaying the backlog"}
        assert body["services"]["db"]["ready"] is True  # the database answered SELECT 1
        warming.warm = True
        status, body = await get(session, health, "/readyz")
        assert status == 200, body
        assert body["status"] == "ready"
        assert set(body["services"]) >= {"db", "migrations", "health", "warming"}
        assert all(s["ready"] for s in body["services"].values())
        # A readiness check that hangs counts as not ready, within the timeout.
        app.services.add(Hanging(), "test")
        status, body = await get(session, health, "/readyz")
        assert status == 503
        assert body["services"]["hanging"] == {
            "ready": False,
            "detail": "readiness check timed out after 2.0s",
        }
        async with session.get(f"http://127.0.0.1:{health.address[1]}/nope") as response:
            assert response.status == 404
        port = health.address[1]
    async with aiohttp.ClientSession() as session:  # stopped with the app
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/healthz")


@pytest.mark.needs_plugin("redis")
async def test_readyz_covers_redis(project, database, redis_url) -> None:
    setup_project(project, database, "http = true\nport = 0", '"storage", "redis", "health"')
    app = project.app(autoload=None, env={"WISP_REDIS_URL": redis_url})
    async with app, aiohttp.ClientSession() as session:
        status, body = await get(session, app.services.get("health"), "/readyz")
        assert status == 200
        assert body["services"]["redis"] == {"ready": True, "detail": "PING answered"}
        await app.services.get("redis").client.aclose()
        app.services.get("redis").client = None  # as if never connected
        status, body = await get(session, app.services.get("health"), "/readyz")
        assert status == 503
        assert body["services"]["redis"] == {"ready": False, "detail": "not started"}


@pytest.mark.needs_plugin("discord")
async def test_readyz_covers_the_discord_gateway(project, database, wisp_offline) -> None:
    setup_project(project, database, "http = true\nport = 0", '"storage", "discord", "health"')
    app = project.app(autoload=None)
    driver = await wisp_offline(app)
    assert driver is not None
    health = app.services.get("health")
    async with aiohttp.ClientSession() as session:
        status, body = await get(session, health, "/readyz")
        assert status == 200, body
        assert body["services"]["discord"]["ready"] is True
        assert body["services"]["discord"]["detail"].startswith("connected as ")
        await app.services.get("discord").bot.close()
        status, body = await get(session, health, "/readyz")
        assert status == 503
        assert body["services"]["discord"] == {"ready": False, "detail": "not connected"}
        assert (await get(session, health, "/healthz"))[0] == 200  # still alive


async def test_bad_config_and_a_taken_port_name_the_key(project, database) -> None:
    setup_project(project, database, 'http = true\nport = 70000\nhost = " "\ntimeout = 0')
    with pytest.raises(wisp.ConfigError) as exc:
        project.app(autoload=None).configure()
    text = str(exc.value)
    for key in ("health.port", "health.host", "health.timeout"):
        assert key in text
    setup_project(project, database, "http = true\nport = 0")
    first = project.app(autoload=None)
    async with first:
        taken = first.services.get("health").address[1]
        setup_project(project, database, f"http = true\nport = {taken}")
        second = project.app(autoload=None)
        with pytest.raises(
            wisp.PluginError, match=f"health.port: cannot listen on 127.0.0.1:{taken}"
        ):
            await second.start()
        assert second.state is not wisp.app.State.STARTED


async def test_doctor_shows_health_and_readiness(project, database, monkeypatch, capsys) -> None:
    setup_project(project, database, "")
    project.write(
        "wispconf.py",
        """
        import wisp

        class Warming(wisp.BaseService):
            name = "warming"

            async def ready(self):
                return wisp.Health(False, "replaying the backlog")

        @wisp.hookimpl
        def wisp_services():
            return Warming()
    """,
    )
    monkeypatch.chdir(project.root)
    code = await asyncio.to_thread(main, ["doctor"])
    out = capsys.readouterr().out
    assert code == 1
    lines = out.splitlines()
    at = lines.index("  ok   warming (plugin wispconf.py): started")
    assert lines[at + 1] == "       NOT READY: replaying the backlog"
    assert any(line.startswith("  ok   db (plugin storage)") for line in lines)
    assert "       ready: HTTP off" in lines  # the health service's own check
    assert "doctor: 1 problem(s)" in out


async def test_one_off_commands_leave_the_port_to_the_running_bot(
    project, database, monkeypatch, capsys
) -> None:
    setup_project(project, database, "http = true\nport = 0")
    monkeypatch.chdir(project.root)
    code = await asyncio.to_thread(main, ["doctor"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "       ready: HTTP not served by `wisp doctor`" in out.splitlines()
    app = project.app(autoload=None)
    app.cli_command = "run"  # what `wisp run` sets: a long-running process serves
    async with app:
        assert app.services.get("health").address is not None
    setup_project(project, database, 'http = true\nport = 0\ncommands = ["run"]')
    app = project.app(autoload=None)
    app.cli_command = "worker"
    async with app:
        assert app.services.get("health").address is None
