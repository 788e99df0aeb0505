"""What does one call through a resilience pattern cost, against peers?

Every inner function is a trivial ``async def``: ``ok()`` returns ``"ok"``,
``fail()`` raises ``Boom``, ``flaky()`` raises on odd calls and returns
``"ok"`` on even ones.  Every pattern is wrapped around it once, before
timing, the way each library documents it; a case times calling the result.
One asyncio event loop, no listeners, no logging on any timed path.

Circuit breaker, closed, the call succeeds (inner ``ok``):

* ``bare await``          - ``await ok()``.
* ``pass-through``        - ``async def w(*args, **kwargs): return await ok(*args, **kwargs)``:
  the floor for any wrapper with ``bind()``'s signature (reference, not a peer).
* ``wisp``                - ``CircuitBreaker(BreakerConfig()).bind(ok)``.
* ``aioresilience``       - ``with_circuit_breaker(CircuitBreaker(name, CircuitConfig()))(ok)``.
* ``purgatory``           - ``AsyncCircuitBreakerFactory()("bench")(ok)``, in memory.
* ``aiobreaker``          - ``CircuitBreaker()(ok)``.
* ``circuitbreaker``      - ``CircuitBreaker(name=...)(ok)`` (its decorator takes coroutines).

Circuit breaker, closed, the call fails (inner ``fail``; every breaker set
to open only after 10**9 consecutive failures, so it stays closed):

* ``bare await``          - ``await ok()`` (the common baseline).
* ``bare await, raises``  - ``await fail()``, caught: the floor for a failing call.
* ``wisp``                - ``BreakerConfig(failure_threshold=10**9)``.
* peers as above          - ``failure_threshold``/``fail_max``/``threshold`` = 10**9.

Circuit breaker, open, the call is rejected (inner ``fail``, never reached):

* ``bare await``, ``bare await, raises`` - as above.
* ``wisp``                - ``BreakerConfig(failure_threshold=1, open_seconds=3600)``,
  opened by one failure before timing.
* ``wisp forced_open``    - ``BreakerConfig(mode="forced_open")`` (reference, not in the aims).
* peers                   - threshold 1, open for an hour, opened by one failure.

Retry, the first attempt succeeds (inner ``ok``; 3 attempts, no backoff):

* ``bare await``, ``pass-through`` - as for the breaker.
* ``wisp``                - ``Retry(RetryConfig(attempts=3, backoff=0)).bind(ok)``.
* ``aioresilience``       - ``with_retry(RetryPolicy(RetryConfig(max_attempts=3,
  initial_delay=0, max_delay=0, jitter=0)))(ok)``.
* ``tenacity``            - ``@retry(stop=stop_after_attempt(3), wait=wait_none(), reraise=True)``.
* ``stamina``             - ``@stamina.retry(on=Exception, attempts=3, timeout=None,
  wait_initial=0, wait_max=0, wait_jitter=0)``, its retry hooks (logging) turned off.

Retry, the first attempt fails and the second succeeds (inner ``flaky``):

* ``bare await``          - ``await ok()``.
* ``hand-written retry``  - ``try: return await flaky()`` / ``except Exception`` /
  ``await asyncio.sleep(0)`` / ``return await flaky()``: the floor for one retry.
* ``wisp`` and peers      - as above.  With zero backoff every library still
  awaits ``asyncio.sleep(0)`` once, so each call includes one event-loop pass.

Bulkhead, uncontended (inner ``ok``; 10 slots, nothing waits):

* ``bare await``          - ``await ok()``.
* ``asyncio.Semaphore``   - ``async with Semaphore(10): return await ok()`` (reference).
* ``wisp``                - ``Bulkhead(BulkheadConfig(max_concurrent=10)).bind(ok)``.
* ``aioresilience``       - ``with_bulkhead(Bulkhead(config=BulkheadConfig(
  max_concurrent=10)))(ok)``.

Timeout, the call finishes in time (inner ``ok``; 10 s):

* ``bare await``          - ``await ok()``.
* ``asyncio.timeout``     - ``async with asyncio.timeout(10): return await ok()`` (reference).
* ``wisp``                - ``Timeout(TimeoutConfig(seconds=10)).bind(ok)``.
* ``aioresilience``       - ``with_timeout_manager(TimeoutManager(TimeoutConfig(timeout=10)))(ok)``.

Peers that do not offer a pattern are left out of its cases; a peer that
offers it but not for asyncio, or that cannot be imported, is printed as
``n/a`` with the reason (pybreaker's only async path is Tornado's
``gen.coroutine``, so it is not timed).  Before and after timing, each case is
called once to check it does what it claims (returns ``"ok"``, raises the
inner error, or rejects without calling the inner function); a peer that fails
this is dropped with the reason, a Wisp case that fails it stops the script.

Each case has its own timing loop (a fresh code object, so CPython's
per-call-site specialisation is never shared between cases), is warmed up,
then repeats run round-robin with the garbage collector off.  Before each
timed run, untimed, the event loop runs once (as it would between a bot's
calls; it drops the timers that timeouts cancelled) and a collection clears
the reference cycles that failures leave; purgatory's open circuit re-raises
one exception instance whose traceback grows with every rejection, so that
traceback is cleared too.  The best (minimum) repeat is reported with the
median beside it.  A slow case gets fewer warm-up calls
and iterations, so one repeat of it stays within about 70 ms (30 ms with
``--quick``) and the whole run stays short.  Aims: the closed breaker's
success path within 3x a bare await, retry's success path within 4x, and
every Wisp case faster than every peer on the same case.  This script only
reports; it never fails on timings.

Run::

    python benchmarks/resilience.py            # ~25 s on a 2-core machine
    python benchmarks/resilience.py --quick    # ~7 s, noisier
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import platform
import statistics
import sys
import time
import types
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from _report import table, versus
from loguru import logger

from wisp.plugins.resilience.api import CircuitOpen
from wisp.plugins.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from wisp.plugins.resilience.bulkhead import Bulkhead, BulkheadConfig
from wisp.plugins.resilience.retry import Retry, RetryConfig
from wisp.plugins.resilience.timeout import Timeout, TimeoutConfig

perf_counter_ns = time.perf_counter_ns

AIM_BREAKER = 3.0  # wisp breaker, closed success path, vs bare await
AIM_RETRY = 4.0  # wisp retry, success path, vs bare await
HUGE = 10**9
OPEN_SECONDS = 3600
ATTEMPTS = 3
SLOTS = 10
TIMEOUT_SECONDS = 10
RESULT = "ok"
WARMUP_STEP = 500

Call = Callable[[], Awaitable[Any]]
Loop = Callable[[int], Awaitable[int]]

# -- peers: imported if they can be, otherwise reported ---------------------------------

PEER_MODULES = {
    # distribution name: import name
    "aioresilience": "aioresilience",
    "pybreaker": "pybreaker",
    "purgatory": "purgatory",
    "aiobreaker": "aiobreaker",
    "circuitbreaker": "circuitbreaker",
    "tenacity": "tenacity",
    "stamina": "stamina",
}
PEERS: dict[str, Any] = {}
UNAVAILABLE: dict[str, str] = {}
for _dist, _module in PEER_MODULES.items():
    try:
        PEERS[_dist] = importlib.import_module(_module)
    except Exception as _exc:  # not installed, or broken on this Python
        UNAVAILABLE[_dist] = f"unavailable: cannot import {_module} ({type(_exc).__name__}: {_exc})"

# What each peer offers, and why an offered pattern is not timed.
OFFERS = {
    "breaker": ["aioresilience", "pybreaker", "purgatory", "aiobreaker", "circuitbreaker"],
    "retry": ["aioresilience", "tenacity", "stamina"],
    "bulkhead": ["aioresilience"],
    "timeout": ["aioresilience"],
}
NOT_ASYNCIO = {
    ("pybreaker", "breaker"): (
        "no asyncio support: its async path, call_async, is a Tornado gen.coroutine; "
        "its sync call() would not await the coroutine"
    ),
}


# -- inner functions -----------------------------------------------------------------


class Boom(Exception):
    """What a failing inner function raises."""


async def ok() -> str:
    return RESULT


async def fail() -> str:
    raise Boom("inner failed")


async def pass_through(*args: Any, **kwargs: Any) -> Any:
    """The least any ``bind()``-style wrapper can do."""
    return await ok(*args, **kwargs)


def make_flaky() -> Call:
    """An inner function that fails on its 1st, 3rd, ... call and succeeds on the others."""
    calls = [0]

    async def flaky() -> str:
        calls[0] += 1
        if calls[0] & 1:
            raise Boom("first attempt failed")
        return RESULT

    flaky.calls = calls  # type: ignore[attr-defined]
    return flaky


# -- cases ---------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    call: Call
    role: str  # "bare" (the baseline), "ref" (a reference floor), "wisp" or "peer"
    expect: type[BaseException] | None = None  # None: returns RESULT
    calls_inner: Callable[[], int] | None = None  # inner calls so far, when checked
    tidy: Callable[[], None] | None = None  # run before each timed run, untimed


@dataclass
class Group:
    key: str
    title: str
    pattern: str  # "breaker", "retry", ...
    raises: bool  # the timing loops catch Exception
    aim: float | None = None  # wisp vs bare await
    cases: list[Case] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # n/a lines

    def add(self, case: Case) -> None:
        self.cases.append(case)


def peer_slot(group: Group, peer: str) -> bool:
    """True when ``peer`` can be timed on this group's pattern; else record why not."""
    if peer in UNAVAILABLE:
        group.notes.append(f"{peer}: n/a ({UNAVAILABLE[peer]})")
        return False
    reason = NOT_ASYNCIO.get((peer, group.pattern))
    if reason is not None:
        group.notes.append(f"{peer}: n/a ({reason})")
        return False
    return True


async def trip(call: Call) -> None:
    """Open a breaker with threshold 1 by one failing call."""
    with contextlib.suppress(Exception):
        await call()


# -- circuit breaker -----------------------------------------------------------------


async def breaker_peer(peer: str, inner: Call, threshold: int, tag: str) -> tuple[Call, type]:
    """``inner`` behind ``peer``'s breaker; its open error type."""
    name = f"bench-{tag}"
    if peer == "aioresilience":
        ar = PEERS[peer]
        cb = ar.CircuitBreaker(
            name=name,
            config=ar.CircuitConfig(failure_threshold=threshold, recovery_timeout=OPEN_SECONDS),
        )
        return ar.with_circuit_breaker(cb)(inner), ar.CircuitBreakerOpenError
    if peer == "purgatory":
        pg = PEERS[peer]
        factory = pg.AsyncCircuitBreakerFactory(
            default_threshold=threshold, default_ttl=OPEN_SECONDS
        )
        await factory.initialize()
        from purgatory.domain.model import OpenedState

        return factory(name, threshold=threshold, ttl=OPEN_SECONDS)(inner), OpenedState
    if peer == "aiobreaker":
        ab = PEERS[peer]
        cb = ab.CircuitBreaker(
            fail_max=threshold, timeout_duration=timedelta(seconds=OPEN_SECONDS), name=name
        )
        return cb(inner), ab.CircuitBreakerError
    if peer == "circuitbreaker":
        cbm = PEERS[peer]
        cb = cbm.CircuitBreaker(
            failure_threshold=threshold, recovery_timeout=OPEN_SECONDS, name=name
        )
        return cb(inner), cbm.CircuitBreakerError
    raise AssertionError(peer)


async def breaker_groups() -> list[Group]:
    success = Group("breaker-ok", "Circuit breaker, closed, the call succeeds", "breaker", False)
    failure = Group("breaker-fail", "Circuit breaker, closed, the call fails", "breaker", True)
    rejected = Group("breaker-open", "Circuit breaker, open, the call is rejected", "breaker", True)
    success.aim = AIM_BREAKER

    success.add(Case("bare await", ok, "bare"))
    success.add(Case("pass-through", pass_through, "ref"))
    success.add(Case("wisp", CircuitBreaker(BreakerConfig(name="bench-ok")).bind(ok), "wisp"))

    for group in (failure, rejected):
        group.add(Case("bare await", ok, "bare"))
        group.add(Case("bare await, raises", fail, "ref", Boom))
    wisp_fail = CircuitBreaker(BreakerConfig(name="bench-fail", failure_threshold=HUGE))
    failure.add(Case("wisp", wisp_fail.bind(fail), "wisp", Boom))

    wisp_open = CircuitBreaker(
        BreakerConfig(name="bench-open", failure_threshold=1, open_seconds=OPEN_SECONDS)
    )
    wisp_open_call = wisp_open.bind(fail)
    logger.disable("wisp")  # the one "closed -> open" line; nothing timed logs
    try:
        await trip(wisp_open_call)
    finally:
        logger.enable("wisp")
    if wisp_open.state is not BreakerState.OPEN:
        sys.exit(f"resilience benchmark: the Wisp breaker did not open ({wisp_open.state})")
    rejected.add(Case("wisp", wisp_open_call, "wisp", CircuitOpen))
    forced = CircuitBreaker(BreakerConfig(name="bench-forced", mode="forced_open"))
    rejected.add(Case("wisp forced_open", forced.bind(fail), "ref", CircuitOpen))

    for peer in OFFERS["breaker"]:
        if not peer_slot(success, peer):
            failure.notes.append(success.notes[-1])
            rejected.notes.append(success.notes[-1])
            continue
        call, _ = await breaker_peer(peer, ok, 5, "ok")
        success.add(Case(peer, call, "peer"))
        call, _ = await breaker_peer(peer, fail, HUGE, "fail")
        failure.add(Case(peer, call, "peer", Boom))
        call, open_error = await breaker_peer(peer, fail, 1, "open")
        await trip(call)
        rejected.add(Case(peer, call, "peer", open_error, tidy=await reused_error(call)))
    return [success, failure, rejected]


async def reused_error(call: Call) -> Callable[[], None] | None:
    """Purgatory raises one exception instance per open circuit, again and again,
    so its traceback grows by a few entries per rejected call (O(1) each, but the
    frames stay alive).  Clear it between timed runs, so memory and collection
    time stay bounded; None for a breaker that raises a new error each time."""
    errors = []
    for _ in range(2):
        try:
            await call()
        except Exception as exc:
            errors.append(exc)
    if len(errors) != 2 or errors[0] is not errors[1]:
        return None
    error = errors[0]
    return lambda: setattr(error, "__traceback__", None)


# -- retry ---------------------------------------------------------------------------


def retry_peer(peer: str, inner: Call) -> Call:
    if peer == "aioresilience":
        ar = PEERS[peer]
        config = ar.RetryConfig(max_attempts=ATTEMPTS, initial_delay=0, max_delay=0, jitter=0)
        return ar.with_retry(ar.RetryPolicy(config=config))(inner)
    if peer == "tenacity":
        tn = PEERS[peer]
        return tn.retry(  # type: ignore[no-any-return]
            stop=tn.stop_after_attempt(ATTEMPTS), wait=tn.wait_none(), reraise=True
        )(inner)
    if peer == "stamina":
        st = PEERS[peer]
        return st.retry(  # type: ignore[no-any-return]
            on=Exception,
            attempts=ATTEMPTS,
            timeout=None,
            wait_initial=0,
            wait_max=0,
            wait_jitter=0,
        )(inner)
    raise AssertionError(peer)


def retry_groups() -> list[Group]:
    success = Group("retry-ok", "Retry, the first attempt succeeds", "retry", False, AIM_RETRY)
    once = Group("retry-once", "Retry, one failed attempt, then success", "retry", False)
    if "stamina" in PEERS:
        # Its default hook logs a warning per retry; Wisp's events cost nothing unheard.
        PEERS["stamina"].instrumentation.set_on_retry_hooks([])
    config = RetryConfig(attempts=ATTEMPTS, backoff=0)

    success.add(Case("bare await", ok, "bare"))
    success.add(Case("pass-through", pass_through, "ref"))
    success.add(Case("wisp", Retry(config).bind(ok), "wisp"))

    def counted(name: str, role: str, wrap: Callable[[Call], Call]) -> Case:
        flaky = make_flaky()
        calls = flaky.calls  # type: ignore[attr-defined]
        return Case(name, wrap(flaky), role, None, lambda: calls[0])

    def hand_written(flaky: Call) -> Call:
        sleep = asyncio.sleep

        async def hand_retry() -> Any:
            try:
                return await flaky()
            except Exception:
                pass
            await sleep(0)
            return await flaky()

        return hand_retry

    once.add(Case("bare await", ok, "bare"))
    once.add(counted("hand-written retry", "ref", hand_written))
    once.add(counted("wisp", "wisp", Retry(config).bind))
    for peer in OFFERS["retry"]:
        if peer_slot(success, peer):
            success.add(Case(peer, retry_peer(peer, ok), "peer"))
            once.add(counted(peer, "peer", lambda inner, peer=peer: retry_peer(peer, inner)))
        else:
            once.notes.append(success.notes[-1])
    return [success, once]


# -- bulkhead and timeout --------------------------------------------------------------


def bulkhead_group() -> Group:
    group = Group("bulkhead", "Bulkhead, uncontended", "bulkhead", False)
    sem = asyncio.Semaphore(SLOTS)

    async def with_semaphore() -> Any:
        async with sem:
            return await ok()

    group.add(Case("bare await", ok, "bare"))
    group.add(Case("asyncio.Semaphore", with_semaphore, "ref"))
    group.add(Case("wisp", Bulkhead(BulkheadConfig(max_concurrent=SLOTS)).bind(ok), "wisp"))
    if peer_slot(group, "aioresilience"):
        ar = PEERS["aioresilience"]
        bulkhead = ar.Bulkhead(name="bench", config=ar.BulkheadConfig(max_concurrent=SLOTS))
        group.add(Case("aioresilience", ar.with_bulkhead(bulkhead)(ok), "peer"))
    return group


def timeout_group() -> Group:
    group = Group("timeout", "Timeout, the call finishes in time", "timeout", False)
    timeout = asyncio.timeout

    async def with_timeout() -> Any:
        async with timeout(TIMEOUT_SECONDS):
            return await ok()

    group.add(Case("bare await", ok, "bare"))
    group.add(Case("asyncio.timeout", with_timeout, "ref"))
    group.add(Case("wisp", Timeout(TimeoutConfig(seconds=TIMEOUT_SECONDS)).bind(ok), "wisp"))
    if peer_slot(group, "aioresilience"):
        ar = PEERS["aioresilience"]
        manager = ar.TimeoutManager(config=ar.TimeoutConfig(timeout=TIMEOUT_SECONDS))
        group.add(Case("aioresilience", ar.with_timeout_manager(manager)(ok), "peer"))
    return group


# -- checks --------------------------------------------------------------------------


async def check(group: Group, when: str) -> None:
    """Call each case once: does it return, raise or reject as it claims?"""
    keep = []
    for case in group.cases:
        problem = None
        before = case.calls_inner() if case.calls_inner else 0
        try:
            result = await case.call()
        except Exception as exc:
            if case.expect is None or not isinstance(exc, case.expect):
                want = "to return 'ok'" if case.expect is None else case.expect.__name__
                problem = f"raised {type(exc).__name__}: {exc} (wanted {want})"
        else:
            if case.expect is not None:
                problem = f"returned {result!r} (wanted {case.expect.__name__})"
            elif result != RESULT:
                problem = f"returned {result!r}"
        if problem is None and case.calls_inner is not None:
            made = case.calls_inner() - before
            if made != 2:
                problem = f"called the inner function {made} times (wanted 2)"
        if problem is None:
            keep.append(case)
        elif case.role == "peer":
            group.notes.append(f"{case.name}: n/a (check {when} timing failed: {problem})")
        else:
            sys.exit(f"resilience benchmark: {group.key} / {case.name} {problem} ({when} timing)")
    group.cases = keep


# -- timing --------------------------------------------------------------------------


async def _plain_loop(n: int, call: Call = ok) -> int:
    t0 = perf_counter_ns()
    for _ in range(n):
        await call()
    return perf_counter_ns() - t0


async def _raising_loop(n: int, call: Call = fail) -> int:
    t0 = perf_counter_ns()
    for _ in range(n):
        try:  # noqa: SIM105 - contextlib.suppress would be timed too
            await call()
        except Exception:
            pass
    return perf_counter_ns() - t0


def timing_loop(call: Call, raises: bool) -> Loop:
    """A loop awaiting ``call()`` n times, with a code object of its own.

    CPython keeps specialised (adaptive) bytecode per code object, so a copy
    per case keeps one case's call site from being tuned for another's callee.
    """
    template = _raising_loop if raises else _plain_loop
    code = template.__code__.replace()
    loop = types.FunctionType(code, template.__globals__, template.__name__, (call,))
    return loop  # type: ignore[return-value]


async def measure(
    loops: dict[str, Loop],
    n: int,
    repeats: int,
    warmup: int,
    budget_ns: int,
    tidy: dict[str, Callable[[], None]],
) -> dict[str, tuple[float, float, int]]:
    """Best and median ns per call, and the n used, for each case."""
    sizes: dict[str, int] = {}
    for name, loop in loops.items():
        # Warm up with `warmup` calls, or fewer when they would take over the budget.
        done = elapsed = 0
        while done < warmup and elapsed < budget_ns:
            elapsed += await loop(WARMUP_STEP)
            done += WARMUP_STEP
        per = max(elapsed / done, 1.0)
        sizes[name] = min(n, max(1_000, int(budget_ns / per)))
    samples: dict[str, list[float]] = {name: [] for name in loops}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, loop in loops.items():
                # Untimed: let the event loop run once (as it would between a bot's
                # calls; it drops the timers that timeouts cancelled), tidy, and
                # collect the reference cycles that failures leave.
                await asyncio.sleep(0)
                if name in tidy:
                    tidy[name]()
                gc.collect()
                samples[name].append(await loop(sizes[name]) / sizes[name])
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: (min(s), statistics.median(s), sizes[name]) for name, s in samples.items()}


@dataclass
class Aim:
    text: str
    met: bool


async def run_group(group: Group, n: int, repeats: int, budget_ns: int) -> list[Aim]:
    await check(group, "before")
    loops = {case.name: timing_loop(case.call, group.raises) for case in group.cases}
    tidy = {case.name: case.tidy for case in group.cases if case.tidy is not None}
    results = await measure(loops, n, repeats, max(1_000, n // 10), budget_ns, tidy)
    await check(group, "after")
    dropped = set(loops) - {case.name for case in group.cases}
    if dropped:  # a peer that stopped doing what it claims is not compared
        results = {k: v for k, v in results.items() if k not in dropped}

    print(f"\n{group.title} (best of {repeats}, ns per call):")
    table(results, "bare await")
    roles = {case.name: case.role for case in group.cases}
    for ref in (name for name, role in roles.items() if role == "ref"):
        ratio = results["wisp"][0] / results[ref][0]
        print(f"  {'wisp / ' + ref:<34} {ratio:6.2f}x  (reference, not a peer)")
    peers = [name for name, role in roles.items() if role == "peer"]
    ahead = versus(results, "wisp", peers)
    for note in group.notes:
        print(f"  {note}")

    aims = []
    parts = []
    if group.aim is not None:
        ratio = results["wisp"][0] / results["bare await"][0]
        met = ratio <= group.aim
        parts.append(
            f"wisp <= {group.aim:g}x bare await: {ratio:.2f}x -> {'met' if met else 'NOT met'}"
        )
        aims.append(Aim(f"{group.key}: wisp <= {group.aim:g}x bare await ({ratio:.2f}x)", met))
    if peers:
        parts.append(f"faster than every peer -> {'met' if ahead else 'NOT met'}")
        slowest = min(results[p][0] / results["wisp"][0] for p in peers)
        aims.append(
            Aim(f"{group.key}: wisp faster than every peer (closest {slowest:.2f}x)", ahead)
        )
    else:
        parts.append("no peer to compare")
    print("  aim: " + "; ".join(parts))
    return aims


def versions() -> str:
    out = []
    for dist in ("wisp-framework", *PEER_MODULES):
        try:
            out.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return ", ".join(out)


async def run(n: int, repeats: int, budget_ns: int) -> None:
    print(f"Python {platform.python_version()} on {platform.machine()}; {versions()}")
    groups = [*await breaker_groups(), *retry_groups(), bulkhead_group(), timeout_group()]
    aims: list[Aim] = []
    for group in groups:
        aims += await run_group(group, n, repeats, budget_ns)
    missed = [aim for aim in aims if not aim.met]
    print(f"\nAims: {len(aims) - len(missed)} of {len(aims)} met")
    for aim in aims:
        print(f"  {'met    ' if aim.met else 'NOT met'}  {aim.text}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations, noisier")
    args = parser.parse_args(argv)
    if args.quick:
        n, repeats, budget_ns = 20_000, 3, 30_000_000
    else:
        n, repeats, budget_ns = 100_000, 7, 70_000_000
    asyncio.run(run(n, repeats, budget_ns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
