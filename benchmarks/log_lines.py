"""One JSON log line: Wisp's logging plugin against plain loguru.

Cases (each writes to ``os.devnull`` through loguru, the same message with two
arguments):

* ``loguru json``: ``logger.add(sink, serialize=True)`` and ``logger.info``,
  no patcher, nothing bound: the plain baseline.
* ``wisp bound json``: the logging plugin's sink (:func:`configure_logging`
  with ``fmt="json"``, a redactor knowing three secrets) and ``ctx.logger``
  inside an invocation, so the line carries the request id, invocation type,
  guild, channel, user and command, and is scrubbed for secrets.
* ``wisp json, unbound``: the plugin's JSON format without its patcher (no
  fields, no redaction): what the fields and the scrubbing cost on their own.
* ``wisp json, no ctx``: the same sink, a line outside any invocation.

The issue's aim: a bound line costs at most 1.2x a plain one.  Import
:func:`measure` from another benchmark (``benchmarks/`` is on ``sys.path``
when one runs from there), or run this file.

Run::

    python benchmarks/log_lines.py
"""

from __future__ import annotations

import os
import time
from typing import Any

from _report import Results, table
from loguru import logger

import wisp
from wisp.context import InvocationType, WispContext, _current
from wisp.logs import use_patcher
from wisp.plugins.logconfig.api import Redactor, configure_logging
from wisp.plugins.logconfig.records import json_format


def _time(fn: Any, loops: int, rounds: int = 7) -> tuple[float, float, int]:
    for _ in range(loops // 10):
        fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter_ns() - start) / loops)
    samples.sort()
    return samples[0], samples[len(samples) // 2], loops


def measure(loops: int = 20_000) -> Results:
    """Best and median ns per line for each case; loguru is restored afterwards."""
    results: Results = {}
    with open(os.devnull, "w") as devnull:
        logger.remove()
        logger._core.patcher = None  # type: ignore[attr-defined]  # loguru without a patcher
        logger.add(devnull, serialize=True, diagnose=False, backtrace=False)
        results["loguru json"] = _time(
            lambda: logger.info("user {} ran {}", 1234567890, "roll"), loops
        )

        redactor = Redactor.build(["a-known-secret-1", "another-secret-2", "third-secret-3"])
        logger.remove()
        logger.add(devnull, format=json_format(redactor), colorize=False, diagnose=False)
        results["wisp json, unbound"] = _time(
            lambda: logger.info("user {} ran {}", 1234567890, "roll"), loops
        )
        configure_logging(level="INFO", fmt="json", sink=devnull, redactor=redactor)
        app = wisp.Wisp(rootdir=os.getcwd(), autoload=False, env={})
        ctx = WispContext(
            app=app,
            invocation_type=InvocationType.SLASH,
            name="roll",
            guild_id=1191168914227200003,
            channel_id=1191168914227200004,
            user_id=1191168914227200002,
        )
        bound = ctx.logger
        token = _current.set(ctx)
        try:
            results["wisp bound json"] = _time(
                lambda: bound.info("user {} ran {}", 1234567890, "roll"), loops
            )
        finally:
            _current.reset(token)
        results["wisp json, no ctx"] = _time(
            lambda: logger.info("user {} ran {}", 1234567890, "roll"), loops
        )
        logger.remove()
        use_patcher(None)
    return results


def main() -> None:
    results = measure()
    print("one JSON log line (ns per line, to /dev/null)")
    table(results, "loguru json", unit="ns/line")
    ratio = results["wisp bound json"][0] / results["loguru json"][0]
    print(f"  bound line / plain loguru JSON line: {ratio:.2f}x (aim: at most 1.2x)")
    ratio = results["wisp bound json"][0] / results["wisp json, unbound"][0]
    print(f"  bound line / the same format unbound: {ratio:.2f}x")


if __name__ == "__main__":
    main()
