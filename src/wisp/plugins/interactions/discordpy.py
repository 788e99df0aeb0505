"""Every piece of discord.py's internals the HTTP interactions endpoint leans on.

discord.py has no HTTP interactions: it answers an interaction with a REST
``POST /interactions/{id}/{token}/callback``.  An Interactions Endpoint must put
that answer in the body of Discord's HTTP request instead.  So, for one
delivery, the webhook adapter discord.py reads from the ``async_context``
context variable is swapped for :class:`CapturingAdapter`, which hands the
first callback to the endpoint (and turns a late one into an edit of the
original response), and the payload is fed to ``ConnectionState
.parse_interaction_create`` exactly as the gateway would: slash commands,
autocomplete, views and modals run through the same code as on the gateway.

Nothing else in Wisp touches these internals.  :func:`check_internals` fails
loudly when an upgrade changes them (the contract test calls it, and the
endpoint calls it at start-up); :data:`CHECKED_VERSIONS` lists the discord.py
releases it was checked against.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import discord
from discord.http import MultipartParameters
from discord.webhook import async_ as webhook_async

__all__ = [
    "CHECKED_VERSIONS",
    "CapturingAdapter",
    "InternalsChanged",
    "capture",
    "check_internals",
    "deliver",
]

#: discord.py releases this module was read against (``pip install discord.py==X``).
CHECKED_VERSIONS = ("2.7.1",)

#: Parameters of AsyncWebhookAdapter.create_interaction_response this module relies on.
_CALLBACK_PARAMS = ("interaction_id", "token", "session", "proxy", "proxy_auth", "params")
_EDIT_PARAMS = ("application_id", "token", "session", "payload", "multipart", "files")
_DELETE_PARAMS = ("application_id", "token", "session", "proxy", "proxy_auth")
_EXECUTE_PARAMS = ("webhook_id", "token", "session", "proxy", "proxy_auth", "payload", "wait")


class InternalsChanged(RuntimeError):
    """discord.py changed an internal the HTTP interactions endpoint uses."""


def check_internals() -> None:
    """Raise :class:`InternalsChanged`, naming the piece, unless every internal used
    here is still where and what it was in :data:`CHECKED_VERSIONS`."""
    problems: list[str] = []
    adapter = getattr(webhook_async, "AsyncWebhookAdapter", None)
    context = getattr(webhook_async, "async_context", None)
    if adapter is None:
        problems.append("discord.webhook.async_.AsyncWebhookAdapter is gone")
    else:
        for method, wanted in (
            ("create_interaction_response", _CALLBACK_PARAMS),
            ("edit_original_interaction_response", _EDIT_PARAMS),
            ("delete_original_interaction_response", _DELETE_PARAMS),
            ("execute_webhook", _EXECUTE_PARAMS),
        ):
            func = getattr(adapter, method, None)
            if func is None:
                problems.append(f"AsyncWebhookAdapter.{method} is gone")
                continue
            have = inspect.signature(func).parameters
            missing = [p for p in wanted if p not in have]
            if missing:
                problems.append(f"AsyncWebhookAdapter.{method} lost parameter(s) {missing}")
    if context is None or not hasattr(context, "set"):
        problems.append("discord.webhook.async_.async_context (a ContextVar) is gone")
    parse = getattr(discord.state.ConnectionState, "parse_interaction_create", None)
    if parse is None:
        problems.append("ConnectionState.parse_interaction_create is gone")
    if list(getattr(MultipartParameters, "_fields", ())) != ["payload", "multipart", "files"]:
        problems.append("discord.http.MultipartParameters changed its fields")
    if problems:
        raise InternalsChanged(
            f"discord.py {discord.__version__} changed internals the HTTP interactions "
            f"endpoint uses (checked against {', '.join(CHECKED_VERSIONS)}): "
            + "; ".join(problems)
            + ". Pin discord.py to a checked version or update "
            "wisp/plugins/interactions/discordpy.py."
        )


class CapturingAdapter(webhook_async.AsyncWebhookAdapter):
    """discord.py's webhook adapter for one delivery: the first interaction callback
    becomes the HTTP answer (``answer``); everything else goes to Discord as usual."""

    def __init__(self, application_id: int, token: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.application_id = application_id
        self.token = token
        self.answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        #: Callbacks that came after the endpoint had answered (then sent as edits).
        self.late: list[dict[str, Any]] = []

    @property
    def deferred_publicly(self) -> bool:
        """The HTTP answer was a public "thinking..." (type 5 without the ephemeral flag)."""
        if not self.answer.done():
            return False
        first = self.answer.result()
        flags = int((first.get("data") or {}).get("flags") or 0)
        return int(first.get("type", 0)) == 5 and not flags & 64

    def answer_with(self, body: Mapping[str, Any]) -> bool:
        """Answer the HTTP request with ``body`` unless it was answered; True if now."""
        if self.answer.done():
            return False
        self.answer.set_result(dict(body))
        return True

    def create_interaction_response(
        self,
        interaction_id: int,
        token: str,
        *,
        session: Any,
        proxy: str | None = None,
        proxy_auth: Any = None,
        params: MultipartParameters,
    ) -> Any:
        return self._callback(interaction_id, token, session, proxy, proxy_auth, params)

    async def _callback(
        self,
        interaction_id: int,
        token: str,
        session: Any,
        proxy: str | None,
        proxy_auth: Any,
        params: MultipartParameters,
    ) -> dict[str, Any]:
        body: dict[str, Any] = dict(params.payload or {})
        if params.multipart:
            # Files cannot ride in our JSON answer: think, then edit them in.
            body = _payload_of_multipart(params.multipart)
            kind = int(body.get("type", 4))
            self.answer_with({"type": 6 if kind == 7 else 5})
            await super().edit_original_interaction_response(
                self.application_id,
                token,
                session=session,
                proxy=proxy,
                proxy_auth=proxy_auth,
                multipart=params.multipart,
                files=params.files,
            )
        elif not self.answer_with(body):
            self.late.append(body)
            kind = int(body.get("type", 0))
            data = dict(body.get("data") or {})
            if kind == 4 and int(data.get("flags") or 0) & 64 and self.deferred_publicly:
                # A private answer after our public "thinking...": an edit would be
                # public, so remove the placeholder and send it as a private follow-up.
                await super().delete_original_interaction_response(
                    self.application_id, token, session=session, proxy=proxy, proxy_auth=proxy_auth
                )
                await super().execute_webhook(
                    self.application_id,
                    token,
                    session=session,
                    proxy=proxy,
                    proxy_auth=proxy_auth,
                    payload=data,
                    wait=True,
                )
            elif kind in (4, 7) and data:
                # Answered already (deferred): the answer becomes the original's edit.
                await super().edit_original_interaction_response(
                    self.application_id,
                    token,
                    session=session,
                    proxy=proxy,
                    proxy_auth=proxy_auth,
                    payload=data,
                )
        kind = int(body.get("type", 0))
        flags = int((body.get("data") or {}).get("flags") or 0)
        return {
            "interaction": {
                "id": str(interaction_id),
                "type": kind,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(flags & 64),
            },
            "resource": {"type": kind},
        }


def _payload_of_multipart(multipart: list[dict[str, Any]]) -> dict[str, Any]:
    import json

    for part in multipart:
        if part.get("name") == "payload_json":
            value = part.get("value")
            if isinstance(value, str | bytes):
                loaded: Any = json.loads(value)
                if isinstance(loaded, dict):
                    return loaded
    return {}


@contextlib.contextmanager
def capture(adapter: CapturingAdapter) -> Iterator[CapturingAdapter]:
    """Make discord.py use ``adapter`` in this task and the tasks it starts."""
    token = webhook_async.async_context.set(adapter)
    try:
        yield adapter
    finally:
        webhook_async.async_context.reset(token)


def deliver(client: discord.Client, payload: Mapping[str, Any]) -> None:
    """Feed an INTERACTION_CREATE payload to ``client`` as its gateway would."""
    client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]


def interaction_webhook(
    application_id: int, token: str, *, client: discord.Client | None = None, session: Any = None
) -> discord.Webhook:
    """The webhook discord.py's ``Interaction.followup`` would give, from stored parts
    (an *application* webhook, so ephemeral follow-ups are allowed)."""
    if client is not None:
        hook = discord.Webhook.partial(application_id, token, client=client)
    else:
        hook = discord.Webhook.partial(application_id, token, session=session)
    hook.type = discord.WebhookType.application
    return hook
