"""What does observability cost?  Three groups, one run, one asyncio loop.

Metrics middleware (per command, ``await app.invoke(ctx)`` on a trivial command):

* ``metrics blocked``      - the app with only the command (``-p no:metrics``).
* ``wisp metrics``         - the same app with the ``metrics`` plugin: its middleware
  counts the outcome and times the call into a histogram.
* ``prometheus mw``        - no metrics plugin; a hand-written middleware doing what
  it does with prometheus-client (a labelled ``Counter`` and ``Histogram``, children
  bound up front).

Counter increment (plain calls, no event loop):

* ``bare call``            - a function that returns.
* ``wisp .value += 1``     - what the middleware does with its counter handle.
* ``wisp inc()``           - ``counter.inc()``.
* ``wisp increment(name)`` - ``registry.increment("commands.executed", command="ping")``:
  the look-up-by-name form of the source documents.
* ``prometheus inc()``     - prometheus-client ``Counter.inc()``.
* ``prometheus labels``    - ``counter.labels(command="ping").inc()``.

One JSON log line: ``benchmarks/log_lines.py``'s cases (the logging plugin's
benchmark, imported): plain loguru's ``serialize=True`` against a line bound to
an invocation by the logging plugin (its fields, redaction, JSON format).

Aims: the metrics middleware adds at most 2 µs per command; a bound JSON line
costs at most 1.2x a plain loguru JSON line.  Every case has its own timing
loop, is warmed up, and repeats run round-robin with the garbage collector off;
the best repeat is reported with the median beside it.  This script only
reports; it never fails on timings.

Run::

    python benchmarks/observability.py          # ~15 s
    python benchmarks/observability.py --quick  # ~2 s, noisier
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import version
from typing import Any

import prometheus_client
from _report import table, versus

import wisp
from wisp.plugins.metrics.api import MetricsRegistry, metrics_of

perf_counter_ns = time.perf_counter_ns
MIDDLEWARE_AIM_NS = 2000.0
LOG_AIM = 1.2

Results = dict[str, tuple[float, float, int]]


def summarize(times: dict[str, list[int]], n: dict[str, int]) -> Results:
    return {
        k: (min(v) / n[k], statistics.median(v) / n[k], n[k] * len(v)) for k, v in times.items()
    }


# -- metrics middleware -------------------------------------------------------------


@wisp.command()
async def ping(ctx: wisp.WispContext) -> str:
    return "pong"


class Commands:
    @wisp.hookimpl
    def wisp_commands(self) -> list[wisp.Command]:
        return [ping]


def prometheus_middleware() -> Any:
    registry = prometheus_client.CollectorRegistry()
    calls = prometheus_client.Counter(
        "bench_commands", "commands", ["command", "status"], registry=registry
    )
    latency = prometheus_client.Histogram(
        "bench_commands_duration_seconds", "latency", ["command"], registry=registry
    )

    class Plugin:
        @wisp.hookimpl
        def wisp_middleware(self, target: Any) -> wisp.Middleware:
            ok = calls.labels(command=target.name, status="ok")
            timing = latency.labels(command=target.name)
            clock = time.perf_counter

            async def prom(ctx: wisp.WispContext, call_next: wisp.CallNext) -> Any:
                start = clock()
                try:
                    result = await call_next(ctx)
                except BaseException as exc:
                    calls.labels(command=target.name, status=type(exc).__name__).inc()
                    timing.observe(clock() - start)
                    raise
                ok.inc()
                timing.observe(clock() - start)
                return result

            return wisp.Middleware("prometheus", prom, wisp.Order.OBSERVE)

    return Plugin(), ok_value(calls)


def ok_value(counter: Any) -> Callable[[], float]:
    return lambda: counter.labels(command="ping", status="ok")._value.get()


async def build(root: str, plugins: list[str], extra: object | None = None) -> Any:
    app = wisp.Wisp(rootdir=root, autoload=False, plugins=plugins, env={})
    app.register(Commands(), "commands")
    if extra is not None:
        app.register(extra, "extra")
    app.configure()
    ctx = await app.make_context(
        wisp.InvocationType.SLASH, "ping", target=app.commands["ping"], options={}
    )
    return app, ctx


def invoke_loop(app: wisp.Wisp, ctx: wisp.WispContext) -> Callable[[int], Awaitable[int]]:
    invoke = app.invoke

    async def loop(n: int) -> int:
        start = perf_counter_ns()
        for _ in range(n):
            await invoke(ctx)
        return perf_counter_ns() - start

    return loop


async def middleware_cost(iterations: int, repeats: int) -> Results:
    with (
        tempfile.TemporaryDirectory() as a,
        tempfile.TemporaryDirectory() as b,
        tempfile.TemporaryDirectory() as c,
    ):
        blocked, bctx = await build(a, [])
        metered, mctx = await build(b, ["metrics"])
        plugin, prom_ok = prometheus_middleware()
        prom, pctx = await build(c, [], plugin)
        chains = {
            name: [m.name for m in app.compiled(app.commands["ping"]).middleware]
            for name, app in (("blocked", blocked), ("metrics", metered), ("prom", prom))
        }
        expected = {"blocked": [], "metrics": ["metrics"], "prom": ["prometheus"]}
        if chains != expected:
            raise SystemExit(f"benchmark setup is wrong: chains {chains}")
        loops = {
            "metrics blocked": invoke_loop(blocked, bctx),
            "wisp metrics": invoke_loop(metered, mctx),
            "prometheus mw": invoke_loop(prom, pctx),
        }
        for loop in loops.values():
            await loop(iterations // 4)
        times: dict[str, list[int]] = {k: [] for k in loops}
        gc.collect()
        gc.disable()
        try:
            for _ in range(repeats):
                for name, loop in loops.items():
                    times[name].append(await loop(iterations))
        finally:
            gc.enable()
        # The metered app really counted every call (a sanity check, not a timing one).
        registry = metrics_of(metered)
        assert registry is not None
        total = registry.value("wisp.commands.ping.ok", command="ping", status="ok")
        if total != iterations // 4 + iterations * repeats or prom_ok() != total:
            raise SystemExit(f"benchmark setup is wrong: counted {total} and {prom_ok()}")
    return summarize(times, dict.fromkeys(loops, iterations))


# -- counter increments ----------------------------------------------------------------


def counter_cost(iterations: int, repeats: int) -> Results:
    reg = MetricsRegistry()
    counter = reg.counter("commands.executed", command="ping")
    prom_registry = prometheus_client.CollectorRegistry()
    plain = prometheus_client.Counter("bench_plain", "plain", registry=prom_registry)
    labelled = prometheus_client.Counter(
        "bench_labelled", "labelled", ["command"], registry=prom_registry
    )

    def noop() -> None:
        return None

    def loop_bare(n: int) -> int:
        start = perf_counter_ns()
        for _ in range(n):
            noop()
        return perf_counter_ns() - start

    def loop_value(n: int) -> int:
        start = perf_counter_ns()
        for _ in range(n):
            counter.value += 1
        return perf_counter_ns() - start

    def loop_inc(n: int) -> int:
        inc = counter.inc
        start = perf_counter_ns()
        for _ in range(n):
            inc()
        return perf_counter_ns() - start

    def loop_increment(n: int) -> int:
        increment = reg.increment
        start = perf_counter_ns()
        for _ in range(n):
            increment("commands.executed", command="ping")
        return perf_counter_ns() - start

    def loop_prom(n: int) -> int:
        inc = plain.inc
        start = perf_counter_ns()
        for _ in range(n):
            inc()
        return perf_counter_ns() - start

    def loop_prom_labels(n: int) -> int:
        labels = labelled.labels
        start = perf_counter_ns()
        for _ in range(n):
            labels(command="ping").inc()
        return perf_counter_ns() - start

    loops: dict[str, Callable[[int], int]] = {
        "bare call": loop_bare,
        "wisp .value += 1": loop_value,
        "wisp inc()": loop_inc,
        "wisp increment(name)": loop_increment,
        "prometheus inc()": loop_prom,
        "prometheus labels": loop_prom_labels,
    }
    n = iterations * 4
    for loop in loops.values():
        loop(n // 4)
    times: dict[str, list[int]] = {k: [] for k in loops}
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, loop in loops.items():
                times[name].append(loop(n))
    finally:
        gc.enable()
    return summarize(times, dict.fromkeys(loops, n))


# -- log lines ---------------------------------------------------------------------------
# benchmarks/log_lines.py (the logging plugin's own benchmark) measures them; run here
# too so that one `nox -s bench` line holds all three of the numbers.


def log_cost(loops: int) -> Results | None:
    try:
        from log_lines import measure
    except ImportError as exc:  # the logging plugin is not there
        print(f"  (log lines not measured: {exc})")
        return None
    return measure(loops)


# -- report --------------------------------------------------------------------------------


async def run(iterations: int, repeats: int) -> dict[str, Any]:
    mw = await middleware_cost(iterations, repeats)
    counters = counter_cost(iterations, repeats)
    logs = log_cost(iterations // 5)
    return {"middleware": mw, "counters": counters, "logs": logs}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (noisier)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    iterations, repeats = (20_000, 3) if args.quick else (100_000, 7)
    report = asyncio.run(run(iterations, repeats))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"wisp {wisp.__version__}, prometheus-client {version('prometheus-client')}, "
        f"loguru {version('loguru')}, Python {sys.version.split()[0]}"
    )
    mw = report["middleware"]
    print("\nmetrics middleware, per command (app.invoke):")
    table(mw, "metrics blocked")
    added = mw["wisp metrics"][0] - mw["metrics blocked"][0]
    verdict = "met" if added <= MIDDLEWARE_AIM_NS else "NOT met"
    print(f"  added by the metrics middleware: {added:,.0f} ns (aim <= 2,000 ns: {verdict})")
    versus(mw, "wisp metrics", ["prometheus mw"])
    print("\ncounter increment:")
    table(report["counters"], "bare call")
    versus(report["counters"], "wisp inc()", ["prometheus inc()"])
    versus(report["counters"], "wisp increment(name)", ["prometheus labels"])
    logs = report["logs"]
    if logs is not None:
        print("\none JSON log line (benchmarks/log_lines.py, to /dev/null):")
        table(logs, "loguru json", unit="ns/line")
        ratio = logs["wisp bound json"][0] / logs["loguru json"][0]
        verdict = "met" if ratio <= LOG_AIM else "NOT met"
        print(
            f"  bound line vs plain loguru JSON line: {ratio:.2f}x (aim <= {LOG_AIM}x: {verdict})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
