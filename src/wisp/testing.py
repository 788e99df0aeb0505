"""pytest plugin for Wisp and its plugins (entry point ``pytest11``: ``wisp``).

Fixtures:

* ``wisp_project``: a throwaway project directory; ``write(path, text)`` adds
  files (``wisp.toml``, command files, ``wispconf.py``), ``app(...)`` builds a
  :class:`wisp.Wisp` on it (autoload off unless asked; ``plugins=`` and
  ``block=`` as with ``-p``), on the embedded SQLite default.
* ``wisp_offline``: starts an application's bot against the offline fake
  Discord and returns the :class:`~wisp.plugins.discord.offline.OfflineDriver`:
  ``await bot.slash("roll", {"sides": 6})``, ``await bot.say("!ping")``, and
  ``bot.fake`` for the recorded REST calls and event injection.  Stopped at
  teardown.

Async fixtures and tests need pytest-asyncio (``pip install
'wisp-framework[testing]'``).
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

import wisp

if TYPE_CHECKING:
    from wisp.plugins.discord.offline import OfflineDriver

__all__ = ["WispProject"]


class WispProject:
    """A project directory for one test."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, rel: str, text: str) -> Path:
        """Write ``text`` (dedented) to ``rel`` under the project."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def app(self, *, autoload: bool | None = False, **kwargs: Any) -> wisp.Wisp:
        """A :class:`wisp.Wisp` on this project (``env={}`` unless given)."""
        kwargs.setdefault("env", {})
        return wisp.Wisp(rootdir=self.root, autoload=autoload, **kwargs)


@pytest.fixture
def wisp_project(tmp_path: Path) -> Iterator[WispProject]:
    root = tmp_path / "wisp-project"
    root.mkdir()
    before = set(sys.modules)
    yield WispProject(root)
    # Command files and wispconf.py are imported by module name: forget them.
    for name in set(sys.modules) - before:
        where = str(getattr(sys.modules[name], "__file__", "")) + str(
            getattr(sys.modules[name], "__path__", "")
        )
        if str(root) in where:
            del sys.modules[name]


@pytest_asyncio.fixture
async def wisp_offline() -> AsyncIterator[Callable[[wisp.Wisp], Awaitable[OfflineDriver]]]:
    """``await wisp_offline(app)``: the app's bot, running against a fake Discord."""
    from wisp.plugins.discord.offline import OfflineDriver

    started: list[OfflineDriver] = []

    async def start(app: wisp.Wisp, **kwargs: Any) -> OfflineDriver:
        driver = OfflineDriver(app, **kwargs)
        await driver.start()
        started.append(driver)
        return driver

    yield start
    for driver in reversed(started):
        await driver.stop()
