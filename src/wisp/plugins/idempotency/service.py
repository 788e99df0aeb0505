"""The ``idempotency`` service: claims, the ``async with`` form, counters, cleanup."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import attrs
import cattrs
from loguru import logger

import wisp
from wisp.plugins.idempotency.api import (
    ClaimLost,
    ClaimOutcome,
    IdempotencyBackend,
    InProgress,
    Record,
    check_key,
    idempotency_key,
)
from wisp.plugins.idempotency.config import IdempotencyConfig
from wisp.plugins.metrics.api import record_outcome

__all__ = ["Claim", "Counters", "IdempotencyService"]

_HOST = socket.gethostname()


def _result_json(result: Any) -> Any:
    """``result`` as JSON data (attrs through cattrs); a TypeError names what is not JSON."""
    if attrs.has(type(result)) or isinstance(result, list | tuple | dict):
        result = cattrs.unstructure(result)
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"an idempotent operation's result must be JSON: {exc}") from None
    return result


@attrs.define
class Counters:
    """What this process's claims met since start-up."""

    #: Claims won (the operation ran here), takeovers of failed or expired keys included.
    claims: int = 0
    #: Repeats answered with a completed operation's stored result.
    hits: int = 0
    #: Repeats refused because the first attempt was still running.
    in_progress: int = 0
    #: Operations that raised (their keys may run again).
    failures: int = 0
    #: Claims that expired and were taken over before their owner finished.
    lost: int = 0


class Claim:
    """One ``async with service.idempotent(key)``: what the caller runs under.

    ``replayed`` is true when the operation completed before: ``result`` is
    its stored result and the body must not run it again.  Otherwise the
    caller owns the key: set ``result``; leaving the block without an
    exception stores it (completed), an exception marks the key failed.
    Entering raises :class:`~wisp.plugins.idempotency.api.InProgress` while
    another owner's claim is live.
    """

    def __init__(
        self,
        service: IdempotencyService,
        key: str,
        *,
        ttl: float,
        lease: float,
        result_type: Any = None,
    ) -> None:
        self.service = service
        self.key = key
        self.ttl = ttl
        self.lease = lease
        self.result_type = result_type
        self.owner = f"{_HOST}:{os.getpid()}:{secrets.token_hex(8)}"
        self.replayed = False
        self.result: Any = None
        #: The stored record a replay came from (``None`` when this claim runs it).
        self.record: Record | None = None
        # The first beat is a timer; only an operation that outlives it gets a task.
        self._timer: asyncio.TimerHandle | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Claim:
        svc = self.service
        found = await svc.backend.claim(self.key, self.owner, self.lease)
        if found.outcome is ClaimOutcome.COMPLETED:
            assert found.record is not None
            svc.counters.hits += 1
            record_outcome(svc.app, "wisp.idempotency", "claim", "replayed")
            self.replayed = True
            self.record = found.record
            self.result = found.record.result
            if self.result_type is not None and self.result is not None:
                self.result = cattrs.structure(self.result, self.result_type)
            return self
        if found.outcome is ClaimOutcome.IN_PROGRESS:
            svc.counters.in_progress += 1
            record_outcome(svc.app, "wisp.idempotency", "claim", "in_progress")
            record = found.record
            raise InProgress(
                self.key,
                record.owner if record else None,
                record.expires_at if record else None,
                safe_message=svc.config.in_progress_message,
            )
        svc.counters.claims += 1
        record_outcome(svc.app, "wisp.idempotency", "claim", "ran")
        if svc.config.heartbeat:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.lease / 3, self._start_beating)
        return self

    def _start_beating(self) -> None:
        self._timer = None
        self._heartbeat = asyncio.create_task(self._beat())

    def pause_heartbeat(self) -> None:
        """Stop renewing the claim (what a stalled owner looks like; for tests)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._heartbeat is not None:
            self._heartbeat.cancel()

    async def _beat(self) -> None:
        interval = self.lease / 3
        while True:
            try:
                kept = await self.service.backend.extend(self.key, self.owner, self.lease)
            except Exception as exc:  # the next beat may get through before the lease ends
                logger.warning("idempotency key {}: heartbeat failed: {}", self.key, exc)
                kept = True
            if not kept:
                logger.warning("idempotency key {}: claim lost (taken over)", self.key)
                return
            await asyncio.sleep(interval)

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.replayed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await wisp.cancel_and_wait(self._heartbeat)
        self._heartbeat = None
        svc = self.service
        if exc is None:
            try:
                data = _result_json(self.result)
            except TypeError as bad:
                await self._fail(bad)
                raise
            stored = await svc.backend.complete(self.key, self.owner, data, self.ttl)
            if not stored:
                svc.counters.lost += 1
                raise ClaimLost(self.key, "store the result")
            return
        await self._fail(exc)

    async def _fail(self, exc: BaseException) -> None:
        svc = self.service
        svc.counters.failures += 1
        record_outcome(svc.app, "wisp.idempotency", "claim", "failed")
        error = f"{type(exc).__name__}: {exc}"[:2000]
        try:
            # Shielded: a cancelled caller still frees its key for the next attempt.
            failed = await asyncio.shield(svc.backend.fail(self.key, self.owner, error, self.ttl))
        except Exception as write_error:
            logger.error(
                "idempotency key {}: cannot mark it failed ({}); it stays claimed until its "
                "lease ends",
                self.key,
                write_error,
            )
            return
        if not failed:
            svc.counters.lost += 1
            logger.warning("idempotency key {}: failed after its claim was taken over", self.key)


class IdempotencyService(wisp.BaseService):
    """``async with ctx.service("idempotency").idempotent(key) as claim: ...``."""

    name = "idempotency"

    def __init__(self, app: wisp.Wisp, config: IdempotencyConfig) -> None:
        super().__init__()
        self.app = app
        self.config = config
        self.requires: Sequence[str] = (
            ("db", "migrations") if config.backend == "sql" else ("redis",)
        )
        self.counters = Counters()
        self._backend: IdempotencyBackend | None = None

    @property
    def backend(self) -> IdempotencyBackend:
        if self._backend is None:
            raise RuntimeError("the idempotency service is not started")
        return self._backend

    async def start(self) -> None:
        if self.config.backend == "sql":
            from wisp.plugins.idempotency.sqlbackend import SQLBackend

            self._backend = SQLBackend(self.app.services.get("db"))
        else:
            from wisp.plugins.idempotency.redisbackend import RedisBackend

            self._backend = RedisBackend(
                self.app.services.get("redis").client, prefix=self.config.redis_prefix
            )
        await super().start()

    async def stop(self) -> None:
        if self._backend is not None:
            await self._backend.close()
            self._backend = None
        await super().stop()

    async def health(self) -> wisp.Health:
        counts = await self.backend.counts()
        shown = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        c = self.counters
        return wisp.Health(
            True,
            f"{self.config.backend}: {shown or 'no keys'}; since start: {c.claims} claims, "
            f"{c.hits} hits, {c.in_progress} in-progress repeats",
        )

    # -- the API ------------------------------------------------------------------------

    def key(
        self,
        operation: str,
        params: Any = None,
        *,
        guild_id: int | None = None,
        user_id: int | None = None,
    ) -> str:
        """:func:`~wisp.plugins.idempotency.api.idempotency_key`, for convenience."""
        return idempotency_key(operation, params, guild_id=guild_id, user_id=user_id)

    def idempotent(
        self,
        key: str,
        *,
        ttl: float | None = None,
        lease: float | None = None,
        result_type: Any = None,
    ) -> Claim:
        """A claim on ``key``, for ``async with``: see :class:`Claim`.

        ``ttl``: seconds the result answers repeats (default ``[idempotency]
        ttl_seconds``); ``lease``: seconds the claim holds without a heartbeat
        (default ``lease_seconds``); ``result_type``: what a replayed result
        is structured into with cattrs.
        """
        check_key(key)
        for name, value in (("ttl", ttl), ("lease", lease)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be greater than 0, not {value!r}")
        return Claim(
            self,
            key,
            ttl=ttl or self.config.ttl_seconds,
            lease=lease or self.config.lease_seconds,
            result_type=result_type,
        )

    async def get(self, key: str) -> Record | None:
        """The stored record of ``key``, expired or not, or ``None``."""
        return await self.backend.get(check_key(key))

    async def forget(self, key: str) -> bool:
        """Delete ``key`` whatever its state (an operator's tool); True if it existed."""
        return await self.backend.delete(check_key(key))

    async def cleanup(self) -> int:
        """Delete expired keys only; return how many."""
        deleted = await self.backend.cleanup()
        if deleted:
            logger.info("idempotency: cleanup deleted {} expired key(s)", deleted)
        return deleted
