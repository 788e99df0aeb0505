"""``[health]``: the optional HTTP endpoint."""

from __future__ import annotations

from typing import Any

import attrs

from wisp.config import positive

__all__ = ["HealthConfig"]


def _port(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be between 0 and 65535 (0: any free port)")


def _host(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise ValueError(f"{attribute.name} must not be empty (127.0.0.1, 0.0.0.0, ::)")


@attrs.frozen
class HealthConfig:
    """``[health]``."""

    #: Serve ``/healthz`` and ``/readyz`` over HTTP (off by default).
    http: bool = False
    #: The address to bind; only this machine by default.  ``0.0.0.0`` for a container.
    host: str = attrs.field(default="127.0.0.1", validator=_host)
    #: The port; 0 picks a free one (the service's ``address`` tells which).
    port: int = attrs.field(default=8090, validator=_port)
    #: Seconds each service's readiness check may take before it counts as not ready.
    timeout: float = attrs.field(default=2.0, validator=positive)
    #: The ``wisp`` subcommands that serve the endpoint: the long-running ones.  A
    #: one-off command (``wisp audit list``) next to a running bot must not take
    #: its port.  An application started from code serves whenever ``http`` is on.
    commands: list[str] = attrs.field(factory=lambda: ["run", "worker"])
