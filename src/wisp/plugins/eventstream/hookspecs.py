"""The hook the eventstream plugin adds (through ``wisp_addhooks``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wisp.markers import hookspec

if TYPE_CHECKING:
    from wisp.app import Wisp


@hookspec(firstresult=True)
def wisp_event_transport(app: Wisp) -> Any:
    """Return the event transport ``[events] transport`` names, or ``None`` to pass.

    Called once, when the ``eventstream`` service starts.  The result is a
    ``wisp.plugins.eventstream.api.EventTransport``: shard streams, consumer
    groups, guild snapshots and leases.  The bundled ``redisstreams`` (Redis
    Streams) and ``nats`` (NATS JetStream) plugins answer ``"redis"`` and
    ``"nats"``.

    :param app: The application.

    firstresult.  ``wispconf.py`` files: all.
    """
