"""Discord's REST limits, as the offline fake enforces them (off unless asked for).

``FakeDiscord(rest_limits=RestLimits(...))`` answers like Discord does:

- per-route buckets: ``limit`` requests per ``window`` seconds, the window
  starting with the first request after a reset, per major parameter (channel,
  guild, webhook); every answer carries ``X-RateLimit-Limit``, ``-Remaining``,
  ``-Reset``, ``-Reset-After`` and ``-Bucket``, and a request past the limit gets
  a 429 with ``X-RateLimit-Scope: user``;
- the global limit: more than ``global_per_second`` requests in any second get a
  429 with ``X-RateLimit-Global: true`` and ``X-RateLimit-Scope: global``
  (interaction and webhook routes are exempt, as on Discord);
- every 401, 403 and (non-``shared``) 429 is counted as an invalid request.

Discord's answers come through Cloudflare and carry a ``Via`` header;
``via=False`` leaves it out, as a REST proxy in front of Discord does (discord.py
takes such a 429 for a Cloudflare ban).  :meth:`FakeRestLimits.fail_next`
makes the next requests fail with a chosen status, proxy-style or as a
Cloudflare ban (a text body).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["FakeRestLimits", "RestLimits", "bucket_hash"]

#: A 429 that Discord sends through Cloudflare says so in ``Via``.
_VIA = "1.1 google"
#: Route groups (names in the fake's route table) that make a major parameter.
_MAJOR = ("channel", "guild")


def bucket_hash(template: str) -> str:
    """The ``X-RateLimit-Bucket`` the fake sends for a route template."""
    return hashlib.sha1(template.encode()).hexdigest()[:16]


@attrs.frozen
class RestLimits:
    """How strict the fake's REST API is."""

    #: Requests per window of every route bucket not named in ``routes``.
    route_limit: int = 5
    #: That window, in seconds.
    route_window: float = 1.0
    #: ``"POST /channels/{channel}/messages": (limit, window)``, by the fake's route
    #: templates (``FakeDiscord.route_template``).
    routes: Mapping[str, tuple[int, float]] = attrs.field(factory=dict)
    #: Requests in any one second, across routes (None: no global limit).
    global_per_second: int | None = 50
    #: False: answers (429s too) carry no ``Via`` header, as from a REST proxy.
    via: bool = True


@attrs.define
class _Bucket:
    count: int = 0
    reset_at: float = 0.0


@attrs.define
class _Forced:
    status: int
    retry_after: float
    via: bool
    text: bool


@attrs.define
class Verdict:
    """What the limits say about one request: a 429 to send, or headers to add."""

    status: int | None = None
    body: Any = None
    text: bool = False
    scope: str | None = None
    headers: dict[str, str] = attrs.Factory(dict)


class FakeRestLimits:
    """The fake's REST limit state and counters (``FakeDiscord.rest``)."""

    def __init__(self, limits: RestLimits | None) -> None:
        self.limits = limits
        #: 429s sent, by scope: ``global``, ``user``, ``shared``, ``proxy`` (forced).
        self.rejected: dict[str, int] = {}
        #: 401, 403 and non-shared 429 answers, as Discord counts them per IP.
        self.invalid_requests = 0
        #: Requests the limits let through.
        self.admitted = 0
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._global: deque[float] = deque()
        self._forced: deque[_Forced] = deque()

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 429,
        retry_after: float = 0.05,
        via: bool = False,
        text: bool = False,
    ) -> None:
        """Answer the next ``count`` bot requests with ``status``.

        A 429 has Discord's JSON body and ``Retry-After``; ``via=False`` (the
        default) is what a REST proxy sends, ``text=True`` a Cloudflare ban page.
        """
        for _ in range(count):
            self._forced.append(_Forced(status, retry_after, via, text))

    @property
    def active(self) -> bool:
        return self.limits is not None or bool(self._forced)

    def check(self, method: str, template: str, groups: Mapping[str, str]) -> Verdict:
        """Admit or refuse one request on the route ``template`` (``"GET /x/{id}"``)."""
        via = self.limits.via if self.limits is not None else True
        if self._forced:
            forced = self._forced.popleft()
            return self._forced_reply(forced)
        verdict = Verdict()
        limits = self.limits
        if limits is None:
            return verdict
        if via:
            verdict.headers["Via"] = _VIA
        now = time.monotonic()
        exempt = template.split(" ", 1)[-1].startswith(("/interactions/", "/webhooks/"))
        if limits.global_per_second is not None and not exempt:
            log = self._global
            while log and log[0] <= now - 1.0:
                log.popleft()
            if len(log) >= limits.global_per_second:
                retry = log[0] + 1.0 - now
                return self._limited(verdict, "global", retry, globally=True)
        limit, window = limits.routes.get(template, (limits.route_limit, limits.route_window))
        major = ":".join(groups[k] for k in _MAJOR if k in groups)
        if "token" in groups:  # webhooks and interactions: per webhook/interaction
            major = groups.get("app", groups.get("interaction", "")) + ":" + groups["token"]
        bucket = self._buckets.setdefault((template, major), _Bucket())
        if now >= bucket.reset_at:
            bucket.count, bucket.reset_at = 0, now + window
        reset_after = bucket.reset_at - now
        remaining = limit - bucket.count - 1
        verdict.headers.update(
            {
                "X-RateLimit-Bucket": bucket_hash(template),
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": str(max(remaining, 0)),
                # Rounded up: a client that trusts it never comes back early.
                "X-RateLimit-Reset-After": f"{_ceil_ms(reset_after):.3f}",
                "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            }
        )
        if remaining < 0:
            return self._limited(verdict, "user", reset_after)
        bucket.count += 1
        if not exempt and limits.global_per_second is not None:
            self._global.append(now)
        self.admitted += 1
        return verdict

    def _limited(
        self, verdict: Verdict, scope: str, retry_after: float, *, globally: bool = False
    ) -> Verdict:
        retry_after = _ceil_ms(retry_after)
        verdict.status = 429
        verdict.scope = scope
        verdict.body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": globally,
        }
        verdict.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        verdict.headers["X-RateLimit-Scope"] = scope
        if globally:
            verdict.headers["X-RateLimit-Global"] = "true"
        return verdict

    def _forced_reply(self, forced: _Forced) -> Verdict:
        # Without Via it came from a proxy, and never reached Discord's budget.
        verdict = Verdict(status=forced.status, scope="user" if forced.via else "proxy")
        if forced.via:
            verdict.headers["Via"] = _VIA
        if forced.status != 429:
            verdict.body = {"code": 0, "message": f"{forced.status}: forced by the test"}
            return verdict
        if forced.text:
            verdict.text = True
            verdict.body = "error code: 1015"
            verdict.headers["Retry-After"] = str(max(1, math.ceil(forced.retry_after)))
            return verdict
        verdict.body = {
            "message": "You are being rate limited.",
            "retry_after": forced.retry_after,
            "global": False,
        }
        verdict.headers["Retry-After"] = str(max(1, math.ceil(forced.retry_after)))
        return verdict

    def answered(self, status: int, scope: str | None) -> None:
        """Count an answer the way Discord's invalid-request budget does."""
        if status == 429:
            self.rejected[scope or "user"] = self.rejected.get(scope or "user", 0) + 1
        if status in (401, 403) or (status == 429 and scope not in ("shared", "proxy")):
            self.invalid_requests += 1

    @staticmethod
    def dumps(body: Any) -> bytes:
        return (body if isinstance(body, str) else json.dumps(body)).encode()


def _ceil_ms(seconds: float) -> float:
    """``seconds`` rounded up to the millisecond, as Discord sends it; float noise
    (``now + 30 - now`` is not always 30) first rounded away, so a full window
    reads 30.000, not 30.001."""
    return math.ceil(round(seconds * 1000, 6)) / 1000
