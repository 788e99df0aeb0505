"""Access log: one line per invocation with its outcome and duration.

Runs as middleware in the ``OBSERVE`` band, outside policy and rate limits,
so refused calls are logged too.  Calls slower than ``slow_ms`` are logged as
warnings.  Block with ``-p no:accesslog``.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import attrs

from wisp import Middleware, Order, PluginMetadata, StashKey, WispError, hookimpl
from wisp.config import positive

if TYPE_CHECKING:
    from wisp import CallNext, Wisp, WispContext
    from wisp.targets import Target


WISP_PLUGIN = PluginMetadata(
    name="accesslog",
    description="One log line per invocation with its outcome and duration.",
    api=">=1.0,<2",
    data="Nothing stored; its log lines name the user id of each invocation.",
)


@attrs.frozen
class AccessLogConfig:
    """``[accesslog]`` in wisp.toml."""

    #: Log event handlers too, not only commands.
    events: bool = False
    #: Calls slower than this many milliseconds are logged as warnings.
    slow_ms: float = attrs.field(default=1000.0, validator=positive)


#: Outcome counts per (target name, outcome), on ``app.stash``.
counts_key = StashKey[Counter[tuple[str, str]]]()


@hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"accesslog": AccessLogConfig}


@hookimpl
def wisp_configure(app: Wisp) -> None:
    app.stash[counts_key] = Counter()


@hookimpl
def wisp_middleware(app: Wisp, target: Target) -> Middleware | None:
    config: AccessLogConfig = app.config.section("accesslog")
    if target.kind != "command" and not config.events:
        return None
    slow_ns = config.slow_ms * 1_000_000
    counts = app.stash[counts_key]
    # "message:greet_back": for events, which handler ran, not only which event.
    label = target.name

    async def access_log(ctx: WispContext, call_next: CallNext) -> Any:
        start = time.perf_counter_ns()
        outcome = "ok"
        try:
            return await call_next(ctx)
        except WispError as exc:
            outcome = type(exc).__name__
            raise
        except BaseException as exc:
            outcome = f"error:{type(exc).__name__}"
            raise
        finally:
            took = time.perf_counter_ns() - start
            counts[(ctx.name, outcome)] += 1
            level = "WARNING" if took > slow_ns else "INFO"
            ctx.logger.log(
                level,
                "{} {} {} in {:.2f}ms (guild={} user={})",
                ctx.invocation_type.value,
                label,
                outcome,
                took / 1e6,
                ctx.guild_id,
                ctx.user_id,
            )

    return Middleware("accesslog", access_log, Order.OBSERVE)
