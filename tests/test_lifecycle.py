from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import wisp
from wisp.app import State


class Recorded(wisp.BaseService):
    def __init__(
        self,
        name: str,
        trail: list[str],
        requires: tuple[str, ...] = (),
        fail_start: bool = False,
        fail_stop: bool = False,
    ) -> None:
        super().__init__()
        self.name = name
        self.requires = requires
        self.trail = trail
        self.fail_start = fail_start
        self.fail_stop = fail_stop

    async def start(self) -> None:
        if self.fail_start:
            raise ConnectionError("port 5432 refused")
        self.trail.append(f"start {self.name}")
        await super().start()

    async def stop(self) -> None:
        self.trail.append(f"stop {self.name}")
        if self.fail_stop:
            raise RuntimeError("stop failed")
        await super().stop()


def plugin_with(*services, startup=None, shutdown=None):
    class P:
        @wisp.hookimpl
        def wisp_services(self):
            return list(services)

    if startup is not None:
        P.wisp_startup = wisp.hookimpl(startup)
    if shutdown is not None:
        P.wisp_shutdown = wisp.hookimpl(shutdown)
    return P()


async def test_services_start_in_dependency_order_and_stop_in_reverse(project) -> None:
    trail: list[str] = []

    async def startup(self, app):
        await asyncio.sleep(0)
        trail.append("startup hook")

    async def shutdown(self, app):
        trail.append("shutdown hook")

    app = project.app()
    app.register(
        plugin_with(
            Recorded("bot", trail, requires=("db", "cache")),
            Recorded("cache", trail, requires=("db",)),
            Recorded("db", trail),
            startup=startup,
            shutdown=shutdown,
        ),
        "p",
    )
    async with app:
        assert app.state is State.STARTED
        assert trail == ["start db", "start cache", "start bot", "startup hook"]
        health = await app.services.health_all()
        assert all(h.ok for h in health.values())
    assert trail[4:] == ["shutdown hook", "stop bot", "stop cache", "stop db"]
    assert app.state is State.STOPPED


async def test_missing_and_cyclic_requirements_are_named(project) -> None:
    app = project.app()
    app.register(plugin_with(Recorded("bot", [], requires=("db",))), "botplugin")
    with pytest.raises(
        wisp.PluginError,
        match="service 'bot' \\(plugin 'botplugin'\\) requires "
        "service 'db', which no loaded plugin provides",
    ):
        await app.start()
    app = project.app()
    app.register(
        plugin_with(Recorded("a", [], requires=("b",)), Recorded("b", [], requires=("a",))), "p"
    )
    with pytest.raises(wisp.PluginError, match="cycle"):
        await app.start()


async def test_failed_start_stops_what_started(project) -> None:
    trail: list[str] = []
    app = project.app()
    app.register(
        plugin_with(
            Recorded("db", trail), Recorded("web", trail, requires=("db",), fail_start=True)
        ),
        "p",
    )
    with pytest.raises(
        wisp.PluginError,
        match=r"service 'web' .* failed to start: "
        r"ConnectionError: port 5432 refused",
    ):
        await app.start()
    assert trail == ["start db", "stop db"]


async def test_failed_startup_hook_stops_services(project) -> None:
    trail: list[str] = []

    def startup(self):
        raise RuntimeError("startup broke")

    app = project.app()
    app.register(plugin_with(Recorded("db", trail), startup=startup), "p")
    with pytest.raises(
        wisp.PluginError, match=r"plugin 'p' .* failed in wisp_startup: RuntimeError: startup broke"
    ):
        await app.start()
    assert trail == ["start db", "stop db"]


async def test_stop_failures_are_logged_and_do_not_stop_the_rest(project, log_lines) -> None:
    trail: list[str] = []

    def shutdown(self):
        raise RuntimeError("shutdown broke")

    app = project.app()
    app.register(
        plugin_with(
            Recorded("db", trail),
            Recorded("web", trail, requires=("db",), fail_stop=True),
            shutdown=shutdown,
        ),
        "p",
    )
    await app.start()
    await app.stop()
    assert trail == ["start db", "start web", "stop web", "stop db"]
    errors = [r["message"] for r in log_lines if r["level"] == "ERROR"]
    assert any(
        "plugin 'p' (-, api) failed in wisp_shutdown: RuntimeError: shutdown broke" in m
        for m in errors
    )
    assert any("service web (plugin p) failed to stop" in m for m in errors)


async def test_health_reports_raising_and_slow_services(project) -> None:
    class Raising(wisp.BaseService):
        name = "raising"

        async def health(self):
            raise OSError("disk gone")

    class Slow(wisp.BaseService):
        name = "slow"

        async def health(self):
            await asyncio.sleep(10)

    app = project.app()
    app.register(plugin_with(Raising(), Slow()), "p")
    async with app:
        health = await app.services.health_all(timeout=0.05)
    assert health["raising"] == wisp.Health(False, "health check raised OSError: disk gone")
    assert not health["slow"].ok and "timed out" in health["slow"].detail


async def test_serve_stops_gracefully_on_sigterm(project) -> None:
    trail: list[str] = []
    app = project.app()
    app.register(plugin_with(Recorded("db", trail)), "p")
    task = asyncio.create_task(app.serve())
    while app.state is not State.STARTED:
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 5)
    assert trail == ["start db", "stop db"]
    assert app.state is State.STOPPED


async def test_serve_applies_gc_threshold_and_restores_it(project) -> None:
    """``[wisp] gc_threshold`` holds while the app serves; the process's own
    thresholds come back when it stops (tests and embedders share the process)."""
    before = gc.get_threshold()
    project.write("wisp.toml", "[wisp]\ngc_threshold = 12345\n")
    app = project.app()
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    while app.state is not State.STARTED:
        await asyncio.sleep(0.01)
    assert gc.get_threshold() == (12345, *before[1:])
    stop.set()
    await asyncio.wait_for(task, 5)
    assert gc.get_threshold() == before


def test_gc_threshold_must_be_positive(project) -> None:
    project.write("wisp.toml", "[wisp]\ngc_threshold = 0\n")
    with pytest.raises(
        wisp.ConfigError, match=r"wisp\.gc_threshold: must be greater than 0; got 0"
    ):
        project.app().configure()


async def test_sigterm_during_start_up_stops_there(project) -> None:
    """A service still starting (waiting for a lease, say) when SIGTERM comes: serve
    returns at once; the half-started service and those before it are stopped."""
    trail: list[str] = []

    class Waiting(Recorded):
        async def start(self) -> None:
            self.trail.append("waiting")
            await asyncio.Event().wait()  # never ready

    app = project.app()
    app.register(plugin_with(Recorded("db", trail), Waiting("lease", trail, ("db",))), "p")
    task = asyncio.create_task(app.serve())
    while "waiting" not in trail:
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 5)
    assert trail == ["start db", "waiting", "stop lease", "stop db"]
    assert app.state is State.STOPPED


def test_wisp_run_shuts_down_on_sigint(project, tmp_path: Path, wisp_exe: str) -> None:
    marker = tmp_path / "trail.txt"
    project.write("wisp.toml", "[wisp]\nautoload = false\n")
    project.write(
        "wispconf.py",
        f"""
        import wisp

        class Marker(wisp.BaseService):
            name = "marker"

            async def start(self):
                with open({str(marker)!r}, "a") as f:
                    f.write("started\\n")

            async def stop(self):
                with open({str(marker)!r}, "a") as f:
                    f.write("stopped\\n")

        @wisp.hookimpl
        def wisp_services():
            return Marker()
    """,
    )
    proc = subprocess.Popen([wisp_exe, "run"], cwd=project.root, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (marker.exists() and "started" in marker.read_text()):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "wisp run did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "stopping" in err
    assert marker.read_text() == "started\nstopped\n"
