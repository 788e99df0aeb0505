"""``[restlimits]``: the REST limiter shared through Redis, and REST-proxy 429s."""

from __future__ import annotations

import attrs

from wisp.config import not_negative, positive

__all__ = ["RestLimitsConfig"]


@attrs.frozen
class RestLimitsConfig:
    """``[restlimits]``."""

    #: The shared limiter.  Unset: on when ``[redis] url`` is set; ``true``
    #: without Redis is a warning and off; ``false``: discord.py's own
    #: per-process limiter only.
    enabled: bool | None = None
    #: Prefix of the Redis keys (a hash of the token follows, never the token).
    prefix: str = "wisp:rest:"
    #: Discord's global limit: requests per second for one bot token.
    global_per_second: int = attrs.field(default=50, validator=positive)
    #: Seconds kept between one window and the next (the global second, a
    #: bucket's window): requests granted at the edge of a window reach Discord
    #: a little later and unevenly.  Raise it on a loaded host or a slow network.
    margin: float = attrs.field(default=0.1, validator=not_negative)
    #: Discord's budget of invalid requests (401, 403, 429) per 10 minutes per IP.
    invalid_limit: int = attrs.field(default=10_000, validator=positive)
    #: Hold every request once this many invalid requests were counted in the
    #: last 10 minutes (0: no guard).  Exhausting the budget bans the IP for an hour.
    invalid_backoff_at: int = attrs.field(default=5_000, validator=not_negative)
    #: Processes that share one egress IP share an invalid-request count: give
    #: them the same group (the default shares it across everything on this Redis).
    invalid_group: str = "default"
    #: Retries of a 429 that a REST proxy made (no ``Via`` header, a JSON body),
    #: after its Retry-After; 0: raise at once, as discord.py does.
    proxy_retries: int = attrs.field(default=3, validator=not_negative)
    #: A proxy 429 asking for a longer wait than this is raised, not waited out.
    proxy_max_wait: float = attrs.field(default=30.0, validator=positive)

    def __attrs_post_init__(self) -> None:
        if self.invalid_backoff_at >= self.invalid_limit:
            raise ValueError(
                f"invalid_backoff_at ({self.invalid_backoff_at}) must be below "
                f"invalid_limit ({self.invalid_limit}): the guard backs off before the ban"
            )
