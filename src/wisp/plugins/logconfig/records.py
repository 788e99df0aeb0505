"""What every record carries: the invocation's fields, with secrets hidden.

:class:`Redactor` knows the secret values of one configuration and the shapes
of secrets in general (passwords in URLs, Discord webhook tokens, bot tokens,
``Authorization`` headers).  :func:`make_patcher` returns loguru's patcher:
it stamps the fields of the invocation running now (read from the context
variable, so any awaited call gets them) and scrubs the message and string
extras.  :func:`json_format` and :func:`console_format` render the lines.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from wisp.context import InvocationType, current_context
from wisp.logs import json_format as kernel_json_format

if TYPE_CHECKING:
    from loguru import Record

    from wisp.app import Wisp

__all__ = [
    "FIELDS",
    "REDACTED",
    "Redactor",
    "console_format",
    "json_format",
    "make_patcher",
    "secrets_of",
]

REDACTED = "***"
#: The fields every record of an invocation carries (the name under the key
#: of its kind: ``command``, ``event``, ``job`` or ``saga``).
FIELDS = ("request_id", "invocation_type", "guild_id", "channel_id", "user_id")
_KIND = {
    InvocationType.SLASH: "command",
    InvocationType.PREFIX: "command",
    InvocationType.CLI: "command",
    InvocationType.EVENT: "event",
    InvocationType.JOB: "job",
    InvocationType.SAGA: "saga",
}
_SECRET_NAME = re.compile(r"(token|password|passwd|secret|api_key|apikey|credential|dsn)", re.I)
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^:/@\s]*:)[^@\s/]+(?=@)")
_WEBHOOK = re.compile(r"(?P<head>/webhooks/\d+/)[\w.-]{20,}")
#: A bot token: user id (base64), timestamp, HMAC, separated by dots.
_BOT_TOKEN = re.compile(r"\b[\w-]{23,28}\.[\w-]{6,7}\.[\w-]{27,}")
_AUTH_HEADER = re.compile(r"(?P<head>\b(?:Bot|Bearer)\s+)[\w.-]{20,}")
#: Shorter values are too likely to occur by chance in ordinary text.
_MIN_SECRET = 6


@attrs.define
class Redactor:
    """Hides known secret values and secret-shaped text in strings."""

    values: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def build(cls, values: Iterable[str] = (), patterns: Iterable[str] = ()) -> Redactor:
        # Longest first: a secret that contains another is hidden whole.
        found = sorted({v for v in values if len(v) >= _MIN_SECRET}, key=len, reverse=True)
        return cls(tuple(found), tuple(re.compile(p) for p in patterns))

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        for value in self.values:
            if value in text:
                text = text.replace(value, REDACTED)
        # Cheap tests first: most lines have no URL and nothing token-long.
        if "://" in text:
            text = _URL_PASSWORD.sub(rf"\g<head>{REDACTED}", text)
        if "/webhooks/" in text:
            text = _WEBHOOK.sub(rf"\g<head>{REDACTED}", text)
        if len(text) >= 58:
            if "." in text:
                text = _BOT_TOKEN.sub(REDACTED, text)
            if "Bot " in text or "Bearer " in text:
                text = _AUTH_HEADER.sub(rf"\g<head>{REDACTED}", text)
        for pattern in self.patterns:
            text = pattern.sub(REDACTED, text)
        return text


def _walk(value: Any, key: str, out: list[str]) -> None:
    if attrs.has(type(value)):
        for field in attrs.fields(type(value)):
            item = getattr(value, field.name)
            if field.metadata.get("secret") and isinstance(item, str):
                out.append(item)
            else:
                _walk(item, field.name, out)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _walk(v, str(k), out)
    elif isinstance(value, list | tuple):
        for v in value:
            _walk(v, key, out)
    elif isinstance(value, str):
        if key and _SECRET_NAME.search(key):
            out.append(value)
        for match in _URL_PASSWORD.finditer(value):
            out.append(value[match.end("head") : match.end()])


def secrets_of(app: Wisp) -> list[str]:
    """Every secret value in the app's configuration and environment."""
    out: list[str] = []
    _walk(app.config.source.data, "", out)
    for section in app.config.sections.values():
        _walk(section, "", out)
    for name, value in app.env.items():
        _walk(value, name, out)
    return out


#: Extras this plugin and ``ctx.logger`` set, never secret: not scrubbed.
_OURS = frozenset(
    {"request_id", "invocation", "invocation_type", "command", "event", "job", "saga", "job_id"}
)
_TYPE_VALUE = {kind: kind.value for kind in InvocationType}


def make_patcher(redactor: Redactor) -> Callable[[Record], None]:
    """loguru's patcher: the invocation's fields, then the secrets scrubbed."""
    scrub = redactor.scrub
    kinds = _KIND
    values = _TYPE_VALUE
    ours = _OURS

    def patch(record: Record) -> None:
        extra = record["extra"]
        if "logger_name" in extra:  # routed from stdlib logging: its logger's name
            record["name"] = extra.pop("logger_name")
        ctx = current_context()
        if ctx is not None:
            if "request_id" not in extra:
                extra["request_id"] = ctx.request_id
            kind = ctx.invocation_type
            extra["invocation_type"] = values[kind]
            extra[kinds[kind]] = ctx.name
            extra["guild_id"] = ctx.guild_id
            extra["channel_id"] = ctx.channel_id
            extra["user_id"] = ctx.user_id
            if ctx.job_id is not None:
                extra["job_id"] = ctx.job_id
                extra["attempt"] = ctx.attempt
        elif "request_id" not in extra:
            extra["request_id"] = "-"
        record["message"] = scrub(record["message"])
        for key, value in extra.items():
            if type(value) is str and key not in ours and len(value) >= _MIN_SECRET:
                extra[key] = scrub(value)

    return patch


def _exception_text(record: Record, scrub: Callable[[str], str]) -> str | None:
    exc = record["exception"]
    if exc is None:
        return None
    text = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
    return scrub(text.rstrip("\n"))


def json_format(redactor: Redactor) -> Callable[[Record], str]:
    """A loguru format function: the record as one JSON object on one line, its
    traceback scrubbed (the kernel's :func:`wisp.logs.json_format`, whose shape
    the lines written before this plugin was configured have too)."""
    return kernel_json_format(redactor.scrub)


CONSOLE_FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[request_id]}</cyan> {message}"
)


def console_format(redactor: Redactor) -> Callable[[Record], str]:
    """A loguru format function: readable lines, the exception scrubbed too."""
    scrub = redactor.scrub
    plain = CONSOLE_FORMAT + "\n"
    with_exc = CONSOLE_FORMAT + "\n{extra[_exception]}\n"

    def format_record(record: Record) -> str:
        if record["exception"] is None:
            return plain
        record["extra"]["_exception"] = _exception_text(record, scrub)
        return with_exc

    return format_record
