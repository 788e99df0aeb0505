"""How much does Wisp's compiled middleware chain cost per command?

Five ways of running one trivial async command behind 8 no-op middleware
layers, timed in one asyncio event loop:

* ``bare await``           - ``await handler(ctx)``, no middleware at all.
* ``hand-written``         - 8 hand-written nested ``async def`` functions, each
  ``return await next_(ctx)``, around the handler.  The floor for 8 layers.
* ``wisp compiled chain``  - ``await compiled.chain(ctx)`` for a command built the
  real way (``Wisp.register`` + ``wisp_middleware``/``wisp_commands`` hooks +
  ``configure()``).
* ``wisp invoke``          - ``await app.invoke(ctx)``: the chain plus the context
  variable, the error boundary and the ``Outcome``/``Response`` wrapping.
* ``pluggy per step``      - the same 8 steps dispatched through pluggy, one hook
  call per step, each returning a coroutine that is awaited, then the handler.

Every case gets its own timing loop, so CPython's per-call-site specialisation
is not shared between cases.  Repeats are interleaved round-robin across the
cases and the best (minimum) repeat of each case is reported.

The aim is for the compiled chain to stay within 1.5x of the hand-written one.
This script only reports; it never fails on timings.

Run::

    python benchmarks/pipeline.py            # ~11 s on a 2-core machine
    python benchmarks/pipeline.py --quick    # ~1 s, noisier
    python benchmarks/pipeline.py --json     # machine-readable
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pluggy

import wisp
from wisp.compiling import CompiledTarget

AIM = 1.5  # compiled chain vs hand-written
LAYERS = 8
RESULT = "ok"

perf_counter_ns = time.perf_counter_ns

Loop = Callable[[int], Awaitable[int]]
Chain = Callable[[Any], Awaitable[Any]]


# -- the handler ---------------------------------------------------------------------


async def bench(ctx: Any) -> str:
    """The command body shared by every case."""
    return RESULT


# -- 1. hand-written chain -----------------------------------------------------------
# Written out by hand on purpose: no loop, no closures, no partials.


async def _hand_mw8(ctx: Any) -> Any:
    return await bench(ctx)


async def _hand_mw7(ctx: Any) -> Any:
    return await _hand_mw8(ctx)


async def _hand_mw6(ctx: Any) -> Any:
    return await _hand_mw7(ctx)


async def _hand_mw5(ctx: Any) -> Any:
    return await _hand_mw6(ctx)


async def _hand_mw4(ctx: Any) -> Any:
    return await _hand_mw5(ctx)


async def _hand_mw3(ctx: Any) -> Any:
    return await _hand_mw4(ctx)


async def _hand_mw2(ctx: Any) -> Any:
    return await _hand_mw3(ctx)


async def _hand_mw1(ctx: Any) -> Any:
    return await _hand_mw2(ctx)


hand_written = _hand_mw1


# -- 2./3. Wisp, built the real way ----------------------------------------------------


def _noop_middleware(index: int) -> wisp.Middleware:
    async def mw(ctx: wisp.WispContext, call_next: wisp.CallNext) -> Any:
        return await call_next(ctx)

    mw.__name__ = mw.__qualname__ = f"noop{index}"
    return wisp.Middleware(f"noop{index}", mw, wisp.Order.DEFAULT + index)


class BenchPlugin:
    """Contributes one command and 8 no-op middleware around every target."""

    @wisp.hookimpl
    def wisp_middleware(self, app: wisp.Wisp, target: Any) -> list[wisp.Middleware]:
        return [_noop_middleware(i) for i in range(LAYERS)]

    @wisp.hookimpl
    def wisp_commands(self, app: wisp.Wisp) -> list[wisp.Command]:
        return [wisp.command()(bench)]


async def build_wisp(rootdir: str) -> tuple[wisp.Wisp, CompiledTarget, wisp.WispContext]:
    """Return the configured app, the compiled target and a context for ``bench``."""
    # env={}: a WISP_TRACE / WISP_PLUGINS in the caller's shell must not change the chain.
    app = wisp.Wisp(rootdir=rootdir, autoload=False, env={})
    if not app.register(BenchPlugin(), "bench"):
        raise SystemExit(f"could not register the bench plugin: {app.pluginmanager.failures}")
    app.configure()
    cmd = app.commands["bench"]
    compiled = app.compiled(cmd)
    ctx = await app.make_context(wisp.InvocationType.CLI, "bench", target=cmd, options={})
    return app, compiled, ctx


# -- 4. pluggy, one dispatch per step ---------------------------------------------------
# Each middleware step is its own hook (step0 .. step7) with exactly one
# implementation, declared firstresult so the call returns that implementation's
# coroutine, which the chain awaits.  So each step costs one real pluggy dispatch
# (HookCaller.__call__ -> argument check -> _multicall over one impl) and one
# await; no step runs another step's implementation.

PLUGGY_PROJECT = "wispbench"
_pluggy_spec = pluggy.HookspecMarker(PLUGGY_PROJECT)
_pluggy_impl = pluggy.HookimplMarker(PLUGGY_PROJECT)


def _step_spec(index: int) -> Callable[[Any], Any]:
    def spec(ctx: Any) -> Any:
        """Run middleware step ``index``."""

    spec.__name__ = f"step{index}"
    return _pluggy_spec(firstresult=True)(spec)


def _step_plugin(index: int) -> object:
    async def step(ctx: Any) -> None:
        return None

    step.__name__ = f"step{index}"
    return type(f"Step{index}", (), {f"step{index}": staticmethod(_pluggy_impl(step))})()


def build_pluggy() -> Chain:
    specs = type("StepSpecs", (), {f"step{i}": staticmethod(_step_spec(i)) for i in range(LAYERS)})
    pm = pluggy.PluginManager(PLUGGY_PROJECT)
    pm.add_hookspecs(specs)
    for i in range(LAYERS):
        pm.register(_step_plugin(i), f"step{i}")
    pm.check_pending()
    h = pm.hook
    step0, step1, step2, step3 = h.step0, h.step1, h.step2, h.step3
    step4, step5, step6, step7 = h.step4, h.step5, h.step6, h.step7

    async def pluggy_chain(ctx: Any) -> Any:
        await step0(ctx=ctx)
        await step1(ctx=ctx)
        await step2(ctx=ctx)
        await step3(ctx=ctx)
        await step4(ctx=ctx)
        await step5(ctx=ctx)
        await step6(ctx=ctx)
        await step7(ctx=ctx)
        return await bench(ctx)

    return pluggy_chain


# -- timing loops ---------------------------------------------------------------------
# One per case, identical apart from what they await (see the module docstring).


def make_loops(
    compiled: CompiledTarget, app: wisp.Wisp, ctx: wisp.WispContext, pluggy_chain: Chain
) -> dict[str, Loop]:
    chain = compiled.chain
    invoke = app.invoke

    async def loop_bare(n: int) -> int:
        start = perf_counter_ns()
        for _ in range(n):
            await bench(ctx)
        return perf_counter_ns() - start

    async def loop_hand(n: int) -> int:
        start = perf_counter_ns()
        for _ in range(n):
            await hand_written(ctx)
        return perf_counter_ns() - start

    async def loop_chain(n: int) -> int:
        start = perf_counter_ns()
        for _ in range(n):
            await chain(ctx)
        return perf_counter_ns() - start

    async def loop_invoke(n: int) -> int:
        start = perf_counter_ns()
        for _ in range(n):
            await invoke(ctx)
        return perf_counter_ns() - start

    async def loop_pluggy(n: int) -> int:
        start = perf_counter_ns()
        for _ in range(n):
            await pluggy_chain(ctx)
        return perf_counter_ns() - start

    return {
        "bare await": loop_bare,
        "hand-written": loop_hand,
        "wisp compiled chain": loop_chain,
        "wisp invoke": loop_invoke,
        "pluggy per step": loop_pluggy,
    }


async def sanity_check(
    compiled: CompiledTarget, app: wisp.Wisp, ctx: wisp.WispContext, pluggy_chain: Chain
) -> None:
    """Make sure every case really runs what it claims to (not a timing check)."""
    problems = []
    if len(compiled.middleware) != LAYERS:
        problems.append(f"compiled chain has {len(compiled.middleware)} middleware")
    if app.trace:
        problems.append("tracing is on; the chain would be the traced one")
    for name, fn in (
        ("bare", bench),
        ("hand-written", hand_written),
        ("chain", compiled.chain),
        ("pluggy", pluggy_chain),
    ):
        if (got := await fn(ctx)) != RESULT:
            problems.append(f"{name} returned {got!r}")
    outcome = await app.invoke(ctx)
    if not outcome.ok or outcome.response is None or outcome.response.content != RESULT:
        problems.append(f"invoke returned {outcome!r}")
    if problems:
        raise SystemExit("benchmark setup is wrong:\n  " + "\n  ".join(problems))


async def measure(
    loops: dict[str, Loop], *, iterations: int, repeats: int, warmup: int
) -> dict[str, list[int]]:
    """Warm each loop up, then time ``repeats`` rounds, interleaved across cases."""
    for loop in loops.values():
        await loop(warmup)
    times: dict[str, list[int]] = {name: [] for name in loops}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, loop in loops.items():
                times[name].append(await loop(iterations))
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


async def run(iterations: int, repeats: int, warmup: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wisp-bench-") as rootdir:
        app, compiled, ctx = await build_wisp(rootdir)
        pluggy_chain = build_pluggy()
        await sanity_check(compiled, app, ctx, pluggy_chain)
        loops = make_loops(compiled, app, ctx, pluggy_chain)
        times = await measure(loops, iterations=iterations, repeats=repeats, warmup=warmup)

    best = {name: min(ts) / iterations for name, ts in times.items()}
    median = {name: sorted(ts)[len(ts) // 2] / iterations for name, ts in times.items()}
    hand, bare = best["hand-written"], best["bare await"]
    ratio = best["wisp compiled chain"] / hand
    order = ["hand-written", "wisp compiled chain", "wisp invoke", "pluggy per step", "bare await"]
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "wisp": wisp.__version__,
        "pluggy": pluggy.__version__,
        "layers": LAYERS,
        "iterations": iterations,
        "repeats": repeats,
        "warmup": warmup,
        "results": [
            {
                "name": name,
                "ns_per_call": round(best[name], 1),
                "median_ns_per_call": round(median[name], 1),
                "vs_hand_written": round(best[name] / hand, 3),
                "vs_bare": round(best[name] / bare, 3),
            }
            for name in order
        ],
        "aim": {
            "description": f"wisp compiled chain within {AIM}x of hand-written",
            "limit": AIM,
            "ratio": round(ratio, 3),
            "met": ratio <= AIM,
        },
    }


def print_table(report: dict[str, Any]) -> None:
    print(
        f"wisp {report['wisp']} / pluggy {report['pluggy']} / "
        f"{report['implementation']} {report['python']} on {report['platform']}"
    )
    print(
        f"{report['layers']} no-op middleware; best of {report['repeats']} repeats x "
        f"{report['iterations']:,} calls (after {report['warmup']:,} warm-up calls)"
    )
    print()
    header = f"{'case':<22} {'ns/call':>9} {'median':>9} {'vs hand':>8} {'vs bare':>8}"
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        print(
            f"{r['name']:<22} {r['ns_per_call']:>9.1f} {r['median_ns_per_call']:>9.1f} "
            f"{r['vs_hand_written']:>7.2f}x {r['vs_bare']:>7.2f}x"
        )
    print()
    aim = report["aim"]
    verdict = "met" if aim["met"] else "NOT met"
    print(f"aim: {aim['description']}: {aim['ratio']:.2f}x -> {verdict}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time Wisp's compiled middleware chain against hand-written and pluggy."
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations (noisier)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.quick:
        iterations, repeats, warmup = 20_000, 3, 5_000
    else:
        iterations, repeats, warmup = 100_000, 7, 20_000
    report = asyncio.run(run(iterations, repeats, warmup))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
