"""Metrics: counters, gauges and timing histograms with labels.

What other plugins and bot code import.  Importing this module never registers
a plugin, so it stays importable when the ``metrics`` plugin is blocked; then
:func:`metrics_of` returns ``None`` and :func:`record_outcome` does nothing.

Every metric has a dotted ``name`` (``wisp.commands.ping.ok``, the scheme of
the source documents, for people and ``wisp metrics``), a ``family``
(``wisp.commands``) and ``labels`` (``{"command": "ping", "status": "ok"}``):
exporters such as ``wisp-prometheus`` use the family and labels, which are
unambiguous where a dotted part may itself hold a dot (job type
``email.send``).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from wisp.stash import StashKey

if TYPE_CHECKING:
    from wisp.app import Wisp

__all__ = [
    "DEFAULT_BUCKETS",
    "Counter",
    "Gauge",
    "Histogram",
    "Metric",
    "MetricsRegistry",
    "metric_name",
    "metrics_of",
    "record_outcome",
    "registry_key",
]

Kind = Literal["counter", "gauge", "histogram"]
M = TypeVar("M", bound="Metric")

#: Upper bounds (seconds) of the timing buckets; a last ``+Inf`` bucket is implied.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: The application's registry, on ``app.stash`` while the metrics plugin is loaded.
registry_key = StashKey["MetricsRegistry"]()


def metric_name(family: str, subject: str, status: str) -> str:
    """``wisp.commands`` + ``tag show`` + ``ok`` -> ``wisp.commands.tag_show.ok``.

    Spaces become ``_`` so a name is one token in ``wisp metrics`` output.
    """
    return f"{family}.{subject.replace(' ', '_')}.{status}"


class Metric:
    """What every metric has: a name, a family, labels and a kind."""

    __slots__ = ("description", "family", "labels", "name")
    kind: Kind

    def __init__(
        self, name: str, family: str, labels: Mapping[str, str], description: str = ""
    ) -> None:
        self.name = name
        self.family = family
        self.labels = dict(labels)
        self.description = description

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able record of the metric's current value."""
        return {
            "name": self.name,
            "family": self.family,
            "kind": self.kind,
            "labels": dict(self.labels),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.labels}>"


class Counter(Metric):
    """A value that only goes up.  ``value`` may be read (and, on a hot path,
    incremented) directly."""

    __slots__ = ("value",)
    kind: Kind = "counter"

    def __init__(
        self, name: str, family: str, labels: Mapping[str, str], description: str = ""
    ) -> None:
        super().__init__(name, family, labels, description)
        self.value: float = 0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError(f"counter {self.name}: cannot go down by {amount}")
        self.value += amount

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "value": self.value}


class Gauge(Metric):
    """A value that goes up and down: connections open, a breaker's state."""

    __slots__ = ("value",)
    kind: Kind = "gauge"

    def __init__(
        self, name: str, family: str, labels: Mapping[str, str], description: str = ""
    ) -> None:
        super().__init__(name, family, labels, description)
        self.value: float = 0

    def set(self, value: float) -> None:
        self.value = value

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "value": self.value}


class _Timer:
    __slots__ = ("_histogram", "_start")

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._start = 0.0

    def __enter__(self) -> _Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._histogram.observe(time.perf_counter() - self._start)


class Histogram(Metric):
    """Durations in seconds, counted into buckets (not cumulative; ``+Inf`` last)."""

    __slots__ = ("bounds", "count", "counts", "max", "sum")
    kind: Kind = "histogram"

    def __init__(
        self,
        name: str,
        family: str,
        labels: Mapping[str, str],
        description: str = "",
        bounds: tuple[float, ...] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, family, labels, description)
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError(f"histogram {name}: bucket bounds must be increasing, got {bounds}")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.max = 0.0

    def observe(self, seconds: float) -> None:
        # le is inclusive, as in Prometheus: bisect_left finds the first bound >= seconds.
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.sum += seconds
        if seconds > self.max:
            self.max = seconds

    def time(self) -> _Timer:
        """``with histogram.time(): ...`` observes the block's duration."""
        return _Timer(self)

    def quantile(self, q: float) -> float:
        """The upper bound of the bucket holding quantile ``q`` (``max`` past the last)."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            seen += n
            if seen >= rank:
                return min(bound, self.max)
        return self.max

    def snapshot(self) -> dict[str, Any]:
        return {
            **super().snapshot(),
            "count": self.count,
            "sum": self.sum,
            "max": self.max,
            "buckets": [[b, n] for b, n in zip(self.bounds, self.counts, strict=False)]
            + [["+Inf", self.counts[-1]]],
        }


def _key(name: str, labels: Mapping[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A metric's identity: its name and its labels, sorted, values as strings."""
    if not labels:
        return (name, ())
    return (name, tuple(sorted([(k, v if type(v) is str else str(v)) for k, v in labels.items()])))


class MetricsRegistry:
    """Every metric of one application, by name and labels.

    ``counter``/``gauge``/``histogram`` return the metric, creating it on first
    use: keep the handle where a call is hot.  ``increment``, ``timing`` and
    ``set_gauge`` are the one-line forms of the source documents.  Asking for a
    name with another kind than it was created with is a ``ValueError``.
    """

    def __init__(self) -> None:
        self._metrics: dict[tuple[str, tuple[tuple[str, str], ...]], Metric] = {}

    def _get(
        self,
        cls: type[M],
        name: str,
        family: str | None,
        description: str,
        labels: Mapping[str, Any],
        **extra: Any,
    ) -> M:
        key = _key(name, labels)
        found = self._metrics.get(key)
        if found is None:
            if not name or name != name.strip():
                raise ValueError(f"metric name {name!r}: a non-empty dotted name")
            found = cls(name, family or name, dict(key[1]), description, **extra)
            self._metrics[key] = found
        elif not isinstance(found, cls):
            raise ValueError(f"metric {name!r} {dict(key[1])} is a {found.kind}, not a {cls.kind}")
        return found

    def counter(
        self, name: str, *, family: str | None = None, description: str = "", **labels: Any
    ) -> Counter:
        return self._get(Counter, name, family, description, labels)

    def gauge(
        self, name: str, *, family: str | None = None, description: str = "", **labels: Any
    ) -> Gauge:
        return self._get(Gauge, name, family, description, labels)

    def histogram(
        self,
        name: str,
        *,
        family: str | None = None,
        description: str = "",
        bounds: tuple[float, ...] = DEFAULT_BUCKETS,
        **labels: Any,
    ) -> Histogram:
        return self._get(Histogram, name, family, description, labels, bounds=bounds)

    def increment(self, name: str, value: float = 1, **labels: Any) -> None:
        """Add ``value`` to the counter ``name``."""
        found = self._metrics.get(_key(name, labels))
        if type(found) is Counter and value >= 0:
            found.value += value
        else:  # first use, a wrong kind, or a bad value: the slow path says what is wrong
            self.counter(name, **labels).inc(value)

    def timing(self, name: str, seconds: float, **labels: Any) -> None:
        """Record one duration, in seconds, in the histogram ``name``."""
        self.histogram(name, **labels).observe(seconds)

    def set_gauge(self, name: str, value: float, **labels: Any) -> None:
        self.gauge(name, **labels).set(value)

    def get(self, name: str, **labels: Any) -> Metric | None:
        """The metric ``name`` with exactly these labels, if it exists."""
        return self._metrics.get(_key(name, labels))

    def value(self, name: str, **labels: Any) -> float:
        """A counter's or gauge's value, a histogram's count; 0 when absent."""
        metric = self.get(name, **labels)
        if metric is None:
            return 0
        if isinstance(metric, Histogram):
            return metric.count
        return float(getattr(metric, "value", 0))

    def __iter__(self) -> Iterator[Metric]:
        # A copy: exporters iterate while invocations create metrics.
        return iter(list(self._metrics.values()))

    def __len__(self) -> int:
        return len(self._metrics)

    def __bool__(self) -> bool:
        # ``if metrics:`` asks whether the service is there, not whether it is empty.
        return True

    def snapshot(self) -> list[dict[str, Any]]:
        """Every metric as JSON-able records, sorted by name and labels."""
        return [
            m.snapshot() for m in sorted(self, key=lambda m: (m.name, sorted(m.labels.items())))
        ]


def metrics_of(app: Wisp) -> MetricsRegistry | None:
    """The application's metrics, or ``None`` when the metrics plugin is not loaded."""
    return app.stash.get(registry_key, None)


def record_outcome(
    app: Wisp,
    family: str,
    subject: str,
    status: str,
    seconds: float | None = None,
    **labels: Any,
) -> None:
    """Count one outcome as ``{family}.{subject}.{status}`` (and its duration).

    For plugins whose outcomes the metrics middleware does not see, such as a
    saga that completed or was compensated::

        record_outcome(app, "wisp.sagas", "checkout", "compensated", 1.2)

    The subject goes in a label named after the family's last part without its
    ``s`` (``saga=checkout``).  Does nothing when the metrics plugin is not loaded.
    """
    registry = metrics_of(app)
    if registry is None:
        return
    key = family.rsplit(".", 1)[-1].removesuffix("s") or "subject"
    labels = {key: subject, **labels}
    registry.counter(
        metric_name(family, subject, status), family=family, status=status, **labels
    ).inc()
    if seconds is not None:
        registry.histogram(
            metric_name(family, subject, "duration"), family=f"{family}.duration", **labels
        ).observe(seconds)
