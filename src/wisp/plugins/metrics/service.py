"""The ``metrics`` service: the registry, resilience event counts, and the
snapshots ``wisp metrics`` reads."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

import wisp
from wisp.plugins.metrics.api import MetricsRegistry, metric_name
from wisp.plugins.metrics.config import MetricsConfig

if TYPE_CHECKING:
    from wisp.plugins.resilience.api import ResilienceEvent

__all__ = ["SNAPSHOT_FORMAT", "MetricsService", "pid_alive", "read_snapshots"]

SNAPSHOT_FORMAT = 1

#: Gauge values of a breaker's state (``wisp.breakers.{name}.state``).
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs (on this machine)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists, it is someone else's
    return True


def read_snapshots(directory: Path) -> list[dict[str, Any]]:
    """Every readable snapshot in ``directory``, newest first; unreadable ones are
    logged and skipped (a snapshot being replaced is never half-written)."""
    found = []
    for path in directory.glob("*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("skipping metrics snapshot {}: {}", path, exc)
            continue
        if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
            logger.warning("skipping metrics snapshot {}: not a format-1 snapshot", path)
            continue
        data["path"] = str(path)
        found.append(data)
    found.sort(key=lambda d: str(d.get("written_at", "")), reverse=True)
    return found


class MetricsService(wisp.BaseService, MetricsRegistry):
    """``ctx.service("metrics")``: the application's :class:`MetricsRegistry`.

    While started it writes a snapshot every ``snapshot_seconds`` to
    ``<snapshot_dir>/<pid>.json`` and a last one on stop (when anything was
    recorded), so ``wisp metrics`` in another shell can print the values of a
    running bot or of the last run.
    """

    name = "metrics"

    def __init__(self, app: wisp.Wisp, config: MetricsConfig) -> None:
        wisp.BaseService.__init__(self)
        MetricsRegistry.__init__(self)
        self.app = app
        self.config = config
        self.directory = (app.rootdir / config.snapshot_dir).resolve()
        self.path = self.directory / f"{os.getpid()}.json"
        self.started_at: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._listener: Any = None
        self._wrote = False
        #: When each saga run this process saw start began (perf_counter), for its duration.
        self.saga_starts: dict[str, float] = {}

    async def start(self) -> None:
        self.started_at = datetime.now(UTC).isoformat()
        if self.config.resilience and self.app.pluginmanager.has_plugin("resilience"):
            # The resilience event bus is process-wide: a listener of our own (not the
            # wisp_resilience_event hook) counts each event once per application.
            from wisp.plugins.resilience.api import global_bus

            self._listener = self.on_resilience_event
            global_bus.add_listener(self._listener)
        if self.config.snapshot:
            self._task = asyncio.create_task(self._every(), name="wisp metrics snapshots")
        await super().start()

    async def stop(self) -> None:
        if self._listener is not None:
            from wisp.plugins.resilience.api import global_bus

            global_bus.remove_listener(self._listener)
            self._listener = None
        await wisp.cancel_and_wait(self._task)
        self._task = None
        if self.config.snapshot:
            try:
                if len(self):
                    await asyncio.to_thread(self._write, self.document(running=False))
                    await asyncio.to_thread(self._prune)
                elif self._wrote:  # nothing to show: leave the last run's snapshot visible
                    self.path.unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("metrics: cannot write the snapshot {}: {}", self.path, exc)
        await super().stop()

    async def health(self) -> wisp.Health:
        if not self.started:
            return wisp.Health(False, "not started")
        return wisp.Health(True, f"{len(self)} metric(s)")

    # -- resilience ------------------------------------------------------------

    def on_resilience_event(self, event: ResilienceEvent) -> None:
        """Count a resilience event: breakers as ``wisp.breakers.{name}.{what}``,
        other patterns as ``wisp.resilience.{pattern}.{name}.{what}``."""
        kind = event.kind.value
        new_state = getattr(event.new_state, "value", event.new_state)
        what = str(new_state) if kind == "state_changed" and new_state is not None else kind
        if event.pattern == "breaker":
            labels = {"breaker": event.name, "status": what}
            self.counter(
                metric_name("wisp.breakers", event.name, what), family="wisp.breakers", **labels
            ).inc()
            if what in BREAKER_STATES:
                self.gauge(
                    metric_name("wisp.breakers", event.name, "state"),
                    family="wisp.breakers.state",
                    description="0 closed, 1 half open, 2 open",
                    breaker=event.name,
                ).set(BREAKER_STATES[what])
            return
        family = f"wisp.resilience.{event.pattern}"
        self.counter(
            metric_name(family, event.name, what),
            family="wisp.resilience",
            pattern=event.pattern,
            instance=event.name,
            status=what,
        ).inc()

    # -- snapshots ---------------------------------------------------------------

    def document(self, *, running: bool) -> dict[str, Any]:
        """The snapshot: who wrote it, when, and every metric."""
        return {
            "format": SNAPSHOT_FORMAT,
            "pid": os.getpid(),
            "running": running,
            "argv": " ".join(["wisp", *sys.argv[1:]]) if sys.argv else "",
            "rootdir": str(self.app.rootdir),
            "started_at": self.started_at,
            "written_at": datetime.now(UTC).isoformat(),
            "snapshot_seconds": self.config.snapshot_seconds,
            "metrics": self.snapshot(),
        }

    def _write(self, document: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{time.monotonic_ns()}.tmp")
        tmp.write_text(json.dumps(document, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)  # readers see the old snapshot or the new, never half
        self._wrote = True

    def _prune(self) -> None:
        """Drop other processes' snapshots once they are over: ours is the last run."""
        for other in read_snapshots(self.directory):
            path = Path(other["path"])
            if path != self.path and not pid_alive(int(other.get("pid", 0))):
                path.unlink(missing_ok=True)

    async def _every(self) -> None:
        while True:
            await asyncio.sleep(self.config.snapshot_seconds)
            try:
                await asyncio.to_thread(self._write, self.document(running=True))
            except OSError as exc:
                logger.warning("metrics: cannot write the snapshot {}: {}", self.path, exc)
