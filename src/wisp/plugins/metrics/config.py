"""``[metrics]``: what the metrics plugin records and where it leaves snapshots."""

from __future__ import annotations

from typing import Any

import attrs

from wisp.config import positive

__all__ = ["MetricsConfig"]


def _relative(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise ValueError(f"{attribute.name} must name a directory")


@attrs.frozen
class MetricsConfig:
    """``[metrics]``."""

    #: Record event handler invocations too (commands, jobs and sagas always are).
    events: bool = True
    #: Count resilience events (breaker state changes, rejections, retries...).
    resilience: bool = True
    #: Write snapshots that ``wisp metrics`` reads: while ``wisp run`` serves, every
    #: ``snapshot_seconds``, and when any started application stops.
    snapshot: bool = True
    snapshot_seconds: float = attrs.field(default=5.0, validator=positive)
    #: Where the snapshots go, relative to the project directory.
    snapshot_dir: str = attrs.field(default=".wisp/metrics", validator=_relative)
