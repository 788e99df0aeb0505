"""contrib/ distributions install and load like any third-party plugin."""

from __future__ import annotations

import importlib.metadata as md
import re

import pytest

from wisp.pluginmanager import Origin


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    try:
        md.distribution("wisp-uptime")
    except md.PackageNotFoundError:
        pytest.fail(
            "contrib/wisp-uptime is not installed: pip install ./contrib/wisp-uptime "
            "(the nox 'tests' session does this)"
        )


async def test_uptime_plugin_loads_as_third_party_and_works(project) -> None:
    app = project.app(autoload=True)
    async with app:
        info = app.pluginmanager.info("uptime")
        assert (info.origin, info.distribution) == (Origin.THIRD_PARTY, "wisp-uptime")
        out = await app.call("uptime")
        assert out.ok and re.fullmatch(r"Up for 0h 0m \ds\.", out.response.content)
        health = await app.services.health_all()
        assert health["uptime"].ok and health["uptime"].detail.startswith("up ")
    # Stopped: the service says so instead of inventing a number.
    from wisp_uptime import UptimeService

    service = UptimeService()
    assert not (await service.health()).ok


@pytest.mark.needs_plugin("basics")
def test_uptime_plugin_is_blockable(project) -> None:
    app = project.app(autoload=True, block=["uptime"]).configure()
    assert "uptime" not in app.commands
    assert "basics" in [p.name for p in app.pluginmanager.plugins()]
