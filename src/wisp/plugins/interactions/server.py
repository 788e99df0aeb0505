"""The ``interactions`` service: Discord's Interactions Endpoint on aiohttp.

One POST is one interaction.  It is checked (Ed25519 signature, fresh
timestamp), de-duplicated by interaction id (across replicas through the
idempotency plugin's store, else per replica), then handed to the ``discord``
service's client exactly as a gateway INTERACTION_CREATE would be: the same
commands, pipeline, views and autocomplete run.  The first answer they give
becomes the HTTP response; if none comes within ``defer_after`` seconds the
endpoint answers "thinking" (type 5; type 6 for component clicks) and the late
answer edits the original response.  No state is kept between requests, so
replicas can sit behind any load balancer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import socket
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from loguru import logger

import wisp
from wisp.plugins.interactions.api import TOKEN_LIFETIME
from wisp.plugins.interactions.config import InteractionsConfig
from wisp.plugins.interactions.signature import BadSignature, Verifier

__all__ = ["Deduper", "InteractionsService"]

PING, COMPONENT, AUTOCOMPLETE = 1, 3, 4
PONG, DEFERRED_MESSAGE, DEFERRED_UPDATE, AUTOCOMPLETE_RESULT = 1, 5, 6, 8


class Deduper:
    """Says whether an interaction id is new: in the idempotency store when that
    plugin runs (shared by every replica), else in a bounded in-memory set (this
    replica only)."""

    def __init__(self, app: wisp.Wisp, size: int) -> None:
        self.app = app
        self.size = size
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._deliveries = itertools.count(1)
        self._seen: OrderedDict[int, None] = OrderedDict()

    @property
    def shared(self) -> bool:
        return "idempotency" in self.app.services

    async def first(self, interaction_id: int) -> bool:
        """True for the first delivery of ``interaction_id``; False for a repeat."""
        if self.shared:
            from wisp.plugins.idempotency.api import ClaimOutcome

            backend = self.app.services.get("idempotency").backend
            # One owner per delivery: a claim is re-entrant for its owner, so a replica-wide
            # owner would let a redelivery to the same replica win (and run) again.
            # Never completed: the claim lapses with the token, when no repeat matters.
            found = await backend.claim(
                f"wisp:interaction:{interaction_id}",
                f"{self.owner}:{next(self._deliveries)}",
                TOKEN_LIFETIME,
            )
            return bool(found.outcome is ClaimOutcome.WON)
        if interaction_id in self._seen:
            return False
        self._seen[interaction_id] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True


class InteractionsService(wisp.BaseService):
    """Serves the endpoint on ``[interactions] host:port path``."""

    name = "interactions"
    requires: Sequence[str] = ("discord",)
    after = ("idempotency", "jobs")

    def __init__(self, app: wisp.Wisp, config: InteractionsConfig, *, port: int | None = None):
        super().__init__()
        self.app = app
        self.config = config
        self.port = config.port if port is None else port
        self.verifier: Verifier | None = None
        self.deduper = Deduper(app, config.dedupe_size)
        self._runner: web.AppRunner | None = None
        #: Answers by kind since start ("pong", "inline", "deferred", "duplicate", "refused").
        self.counts: dict[str, int] = {}

    @property
    def url(self) -> str:
        """Where the endpoint listens (once started)."""
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "") else self.config.host
        return f"http://{host}:{self.port}{self.config.path}"

    def web_app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post(self.config.path, self.handle)
        return app

    async def start(self) -> None:
        from wisp.plugins.interactions.discordpy import check_internals

        if not self.config.public_key:
            raise wisp.ConfigError(
                [
                    "[interactions] public_key (or DISCORD_PUBLIC_KEY) is not set: copy the "
                    "application's public key from the Developer Portal"
                ]
            )
        check_internals()
        self.verifier = Verifier(self.config.public_key, max_age=self.config.max_age)
        if not self.deduper.shared:
            logger.warning(
                "interactions: the idempotency plugin is off; duplicate deliveries are caught "
                "per replica only (last {} ids)",
                self.config.dedupe_size,
            )
        self._runner = web.AppRunner(self.web_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        logger.info("interactions endpoint listening on {}", self.url)
        await super().start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await super().stop()

    async def health(self) -> wisp.Health:
        if not self.started:
            return wisp.Health(False, "not started")
        shown = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items())) or "no requests"
        return wisp.Health(True, f"listening on {self.url}; {shown}")

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    # -- one request ------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        assert self.verifier is not None
        try:
            self.verifier.verify(
                request.headers.get("X-Signature-Ed25519"),
                request.headers.get("X-Signature-Timestamp"),
                body,
            )
        except BadSignature as exc:
            self._count("refused")
            logger.warning("interactions: refused a request from {}: {}", request.remote, exc)
            return web.json_response({"error": "invalid request signature"}, status=401)
        try:
            payload = json.loads(body)
            kind = int(payload["type"])
            interaction_id = int(payload.get("id", 0))
        except (ValueError, TypeError, KeyError, AttributeError):
            return web.json_response({"error": "body is not an interaction"}, status=400)
        if kind == PING:
            self._count("pong")
            return web.json_response({"type": PONG})
        if not interaction_id or not payload.get("token") or not payload.get("application_id"):
            return web.json_response(
                {"error": "interaction lacks id, token or application_id"}, status=400
            )
        if not await self.deduper.first(interaction_id):
            self._count("duplicate")
            logger.info("interactions: interaction {} delivered again; ignored", interaction_id)
            return web.json_response({"error": "duplicate interaction"}, status=409)
        answer = await self.dispatch(payload)
        return web.json_response(answer)

    async def dispatch(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Run the interaction through the bot; return the HTTP answer (a callback)."""
        from wisp.plugins.interactions.discordpy import CapturingAdapter, capture, deliver

        bot = self.app.services.get("discord").bot
        kind = int(payload["type"])
        adapter = CapturingAdapter(int(payload["application_id"]), str(payload["token"]))
        with capture(adapter):
            deliver(bot, payload)
        try:
            async with asyncio.timeout(self.config.defer_after):
                answer = await asyncio.shield(adapter.answer)
            self._count("inline")
            return answer
        except TimeoutError:
            pass
        fallback: dict[str, Any] = {"type": DEFERRED_MESSAGE}
        if kind == COMPONENT:
            fallback = {"type": DEFERRED_UPDATE}
        elif kind == AUTOCOMPLETE:
            fallback = {"type": AUTOCOMPLETE_RESULT, "data": {"choices": []}}
        if adapter.answer_with(fallback):
            self._count("deferred")
            logger.debug("interactions: deferred {} (no answer yet)", payload.get("id"))
            return fallback
        self._count("inline")
        return adapter.answer.result()
