"""Services: long-lived parts with async start/stop, health and readiness.

Plugins return services from ``wisp_services``.  The registry starts them in
dependency order (a service lists the names it ``requires``), stops them in
reverse, and asks each for its health and readiness for ``wisp doctor`` and
the health plugin's ``/readyz``.
"""

from __future__ import annotations

import asyncio
import graphlib
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import attrs
from loguru import logger

from wisp.errors import PluginError

__all__ = ["BaseService", "Health", "Service", "ServiceRegistry"]

S = TypeVar("S")


@attrs.frozen
class Health:
    """A service's answer to "are you well?"."""

    ok: bool
    detail: str = ""


@runtime_checkable
class Service(Protocol):
    """What the kernel needs of a service.

    A service may also have ``after``: names of services to start before it
    when they are registered (an optional dependency), where ``requires``
    fails without them; and ``async def ready() -> Health``: whether it can
    serve now (connected, caught up), where ``health`` says whether it works
    at all.  Without ``ready`` its health is its readiness.
    """

    name: str
    requires: Sequence[str]

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def health(self) -> Health: ...


class BaseService:
    """Convenience base: no requirements, no-op start/stop, healthy once started."""

    name: str = "service"
    requires: Sequence[str] = ()

    def __init__(self) -> None:
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def health(self) -> Health:
        return Health(self.started, "started" if self.started else "not started")


@attrs.define
class _Entry:
    service: Service
    plugin: str | None


class ServiceRegistry:
    """Holds services by name; starts, stops and checks them."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._started: list[str] = []

    def add(self, service: Service, plugin: str | None = None) -> None:
        for attr in ("name", "requires", "start", "stop", "health"):
            if not hasattr(service, attr):
                raise PluginError(
                    f"plugin {plugin!r} returned {service!r} as a service, but it has no {attr!r}"
                )
        if service.name in self._entries:
            other = self._entries[service.name].plugin
            raise PluginError(
                f"service {service.name!r} is registered twice: by plugin {other!r} "
                f"and by plugin {plugin!r}"
            )
        self._entries[service.name] = _Entry(service, plugin)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Any:
        return iter(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def plugin_of(self, name: str) -> str | None:
        return self._entries[name].plugin

    def get(self, name: str) -> Any:
        """Return the service called ``name``; ``KeyError`` names what exists."""
        try:
            return self._entries[name].service
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"no service {name!r} (registered: {known})") from None

    def get_by_type(self, kind: type[S]) -> S:
        found = [e.service for e in self._entries.values() if isinstance(e.service, kind)]
        if len(found) != 1:
            raise KeyError(f"expected one service of type {kind.__name__}, found {len(found)}")
        return found[0]

    def start_order(self) -> list[str]:
        """Names in an order where every service follows what it requires."""
        sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
        for name in sorted(self._entries):
            entry = self._entries[name]
            for req in entry.service.requires:
                if req not in self._entries:
                    raise PluginError(
                        f"service {name!r} (plugin {entry.plugin!r}) requires service "
                        f"{req!r}, which no loaded plugin provides"
                    )
            after = [a for a in getattr(entry.service, "after", ()) if a in self._entries]
            sorter.add(name, *sorted({*entry.service.requires, *after}))
        try:
            return list(sorter.static_order())
        except graphlib.CycleError as exc:
            raise PluginError(f"services require each other in a cycle: {exc.args[1]}") from None

    async def start_all(self) -> None:
        """Start every service in dependency order; on failure, stop the started ones."""
        for name in self.start_order():
            entry = self._entries[name]
            logger.debug("starting service {} (plugin {})", name, entry.plugin)
            try:
                await entry.service.start()
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):
                    # Cancelled half-way (a stop during start-up): it may hold
                    # connections or tasks already, and only its stop() knows them.
                    try:
                        await entry.service.stop()
                    except Exception:
                        logger.exception(
                            "service {} (plugin {}) failed to stop", name, entry.plugin
                        )
                await self.stop_all()
                if isinstance(exc, Exception):
                    raise PluginError(
                        f"service {name!r} (plugin {entry.plugin!r}) failed to start: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                raise
            self._started.append(name)

    async def stop_all(self) -> None:
        """Stop started services in reverse order; log, never raise, on failure."""
        while self._started:
            await self._stop(self._started.pop())

    async def _stop(self, name: str) -> None:
        entry = self._entries[name]
        try:
            await entry.service.stop()
        except Exception:
            logger.exception("service {} (plugin {}) failed to stop", name, entry.plugin)

    async def health_all(self, timeout: float = 5.0) -> dict[str, Health]:
        """Ask every service for its health; a raise or a timeout is unhealthy."""

        async def one(service: Service) -> Health:
            try:
                async with asyncio.timeout(timeout):
                    return await service.health()
            except TimeoutError:
                return Health(False, f"health check timed out after {timeout}s")
            except Exception as exc:
                return Health(False, f"health check raised {type(exc).__name__}: {exc}")

        names = list(self._entries)
        results = await asyncio.gather(*(one(self._entries[n].service) for n in names))
        return dict(zip(names, results, strict=True))

    async def ready_all(self, timeout: float = 5.0) -> dict[str, Health]:
        """Ask every service whether it can serve now: its ``ready()``, or its
        ``health()`` when it has none; a raise or a timeout is not ready."""

        async def one(service: Service) -> Health:
            check = getattr(service, "ready", None) or service.health
            try:
                async with asyncio.timeout(timeout):
                    result: Health = await check()
                    return result
            except TimeoutError:
                return Health(False, f"readiness check timed out after {timeout}s")
            except Exception as exc:
                return Health(False, f"readiness check raised {type(exc).__name__}: {exc}")

        names = list(self._entries)
        results = await asyncio.gather(*(one(self._entries[n].service) for n in names))
        return dict(zip(names, results, strict=True))

    def started(self) -> Iterable[str]:
        return tuple(self._started)
