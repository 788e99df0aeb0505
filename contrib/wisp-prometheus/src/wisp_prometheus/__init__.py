"""wisp-prometheus: the ``metrics`` service on a Prometheus ``/metrics`` endpoint.

An aiohttp server, in the bot's own event loop (so a scrape reads the
registry between invocations, never during one), serves prometheus-client's
text format.  Wisp's dotted families become Prometheus names
(``wisp.commands`` -> ``wisp_commands_total{command="ping",status="ok"}``,
timings -> ``wisp_commands_duration_seconds``).  Off when the ``metrics``
plugin is blocked (``wisp_requires``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
from aiohttp import web
from loguru import logger
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

import wisp
from wisp.plugins.metrics.api import Histogram, MetricsRegistry, metrics_of

__all__ = ["PrometheusConfig", "PrometheusService", "WispCollector", "prometheus_name"]

#: The metrics plugin provides what this one exports.
wisp_requires = ["metrics"]


def _port(_: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be between 0 and 65535 (0: any free port)")


def _path(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.startswith("/"):
        raise ValueError(f"{attribute.name} must start with /")


@attrs.frozen
class PrometheusConfig:
    """``[prometheus]``."""

    #: 127.0.0.1 unless the scraper is elsewhere: the endpoint has no authentication.
    host: str = "127.0.0.1"
    port: int = attrs.field(default=9464, validator=_port)
    path: str = attrs.field(default="/metrics", validator=_path)
    #: Also serve prometheus-client's process, GC and platform metrics.
    process_metrics: bool = True


_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def prometheus_name(dotted: str) -> str:
    """``wisp.commands`` -> ``wisp_commands``: anything else than ``[a-zA-Z0-9_]`` is ``_``."""
    name = _INVALID.sub("_", dotted)
    return "_" + name if name[:1].isdigit() else name


class WispCollector:
    """A prometheus-client collector reading a Wisp registry at each scrape."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self.registry = registry

    def describe(self) -> list[Metric]:
        return []  # the families change as invocations happen: nothing to check up front

    def collect(self) -> Iterator[Metric]:
        groups: dict[tuple[str, str], list[Any]] = {}
        for metric in self.registry:
            groups.setdefault((metric.family, metric.kind), []).append(metric)
        used: set[str] = set()
        for (family, kind), metrics in sorted(groups.items()):
            name = prometheus_name(family)
            if kind == "histogram" and not name.endswith("_seconds"):
                name += "_seconds"
            if name in used:  # the same family used with two kinds
                name += "_" + kind
            used.add(name)
            keys = sorted({prometheus_name(k) for m in metrics for k in m.labels})
            doc = next((m.description for m in metrics if m.description), family)
            out: Any
            if kind == "counter":
                out = CounterMetricFamily(name, doc, labels=keys)
            elif kind == "gauge":
                out = GaugeMetricFamily(name, doc, labels=keys)
            else:
                out = HistogramMetricFamily(name, doc, labels=keys)
            for m in metrics:
                labels = {prometheus_name(k): v for k, v in m.labels.items()}
                values = [labels.get(k, "") for k in keys]
                if isinstance(m, Histogram):
                    buckets, total = [], 0
                    for bound, n in zip(m.bounds, m.counts, strict=False):
                        total += n
                        buckets.append((repr(float(bound)), total))
                    buckets.append(("+Inf", m.count))
                    out.add_metric(values, buckets=buckets, sum_value=m.sum)
                else:
                    out.add_metric(values, m.value)
            yield out


class PrometheusService(wisp.BaseService):
    """Serves ``http://host:port/path``; ``url`` is set once started (``port = 0``
    picks a free port)."""

    name = "prometheus"
    requires: Sequence[str] = ("metrics",)

    def __init__(self, app: wisp.Wisp, config: PrometheusConfig) -> None:
        super().__init__()
        self.app = app
        self.config = config
        self.collectors = CollectorRegistry(auto_describe=False)
        self._runner: web.AppRunner | None = None
        self.url = ""
        #: Why the endpoint is not served, when it is not.
        self.problem = ""

    async def start(self) -> None:
        registry = metrics_of(self.app)
        if registry is None:  # wisp_requires keeps this from happening
            raise wisp.PluginError("wisp-prometheus needs the metrics plugin")
        self.collectors.register(WispCollector(registry))
        web_app = web.Application()
        web_app.router.add_get(self.config.path, self._scrape)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            # Metrics are not worth the bot: it starts, the endpoint is missing,
            # and the health check says why (`wisp call` while the bot serves, say).
            await self._runner.cleanup()
            self._runner = None
            self.problem = (
                f"[prometheus] cannot listen on {self.config.host}:{self.config.port}: {exc}"
            )
            logger.warning("{}; /metrics is not served by this process", self.problem)
            await super().start()
            return
        addresses = self._runner.addresses
        port = addresses[0][1] if addresses else self.config.port
        self.url = f"http://{self.config.host}:{port}{self.config.path}"
        await super().start()

    async def _scrape(self, request: web.Request) -> web.Response:
        body = generate_latest(self.collectors)
        if self.config.process_metrics:
            body += generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await super().stop()

    async def health(self) -> wisp.Health:
        if not self.started:
            return wisp.Health(False, "not started")
        if self.problem:
            return wisp.Health(False, self.problem)
        return wisp.Health(True, f"serving {self.url}")

    async def ready(self) -> wisp.Health:
        """Ready once started, endpoint or not: the bot serves Discord without it."""
        if not self.started:
            return wisp.Health(False, "not started")
        return wisp.Health(True, self.problem or f"serving {self.url}")


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"prometheus": PrometheusConfig}


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    return [PrometheusService(app, app.config.section(PrometheusConfig))]
