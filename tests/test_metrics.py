"""Metrics: the registry, the middleware's names and statuses, resilience
events, snapshots and ``wisp metrics``, and blocking the plugin."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

import wisp
from wisp.plugins.metrics.api import (
    Counter,
    Histogram,
    MetricsRegistry,
    metric_name,
    metrics_of,
    record_outcome,
)

pytestmark = pytest.mark.needs_plugin("metrics")

# -- the registry ---------------------------------------------------------------------


def test_counters_gauges_and_histograms_with_labels() -> None:
    reg = MetricsRegistry()
    reg.increment("commands.executed")
    reg.increment("commands.executed", 2)
    reg.increment("commands.executed", guild=5)
    assert reg.value("commands.executed") == 3
    assert reg.value("commands.executed", guild=5) == 1
    assert reg.value("commands.executed", guild=6) == 0
    # The same name and labels is the same metric, whatever the label order.
    assert reg.counter("x", a=1, b=2) is reg.counter("x", b="2", a="1")
    reg.set_gauge("queue.depth", 7)
    reg.gauge("queue.depth").dec(2)
    assert reg.value("queue.depth") == 5
    for seconds in (0.0005, 0.003, 0.003, 20.0):
        reg.timing("command.duration", seconds)
    h = reg.get("command.duration")
    assert isinstance(h, Histogram)
    assert (h.count, h.max) == (4, 20.0)
    assert h.sum == pytest.approx(20.0065)
    # le is inclusive: 0.0005 lands in the 0.0005 bucket; 20 s past the last bound.
    snap = h.snapshot()
    assert snap["buckets"][0] == [0.0005, 1]
    assert dict((str(b), n) for b, n in snap["buckets"])["0.005"] == 2
    assert snap["buckets"][-1] == ["+Inf", 1]
    assert h.quantile(0.5) == 0.005
    with reg.histogram("block").time():
        pass
    assert reg.value("block") == 1


def test_bad_metric_use_is_refused_with_the_name() -> None:
    reg = MetricsRegistry()
    reg.counter("hits")
    with pytest.raises(ValueError, match=r"metric 'hits' \{\} is a counter, not a gauge"):
        reg.gauge("hits")
    with pytest.raises(ValueError, match="counter hits: cannot go down by -1"):
        reg.counter("hits").inc(-1)
    with pytest.raises(ValueError, match="bucket bounds must be increasing"):
        reg.histogram("lat", bounds=(1.0, 0.5))
    with pytest.raises(ValueError, match="a non-empty dotted name"):
        reg.increment(" ")
    assert reg  # an empty registry is still "the metrics service is there"


def test_names_follow_the_source_scheme() -> None:
    assert metric_name("wisp.commands", "tag show", "ok") == "wisp.commands.tag_show.ok"


# -- the middleware ---------------------------------------------------------------------


@wisp.command()
async def fine(ctx: wisp.WispContext) -> str:
    return "fine"


@wisp.command()
async def picky(ctx: wisp.WispContext, what: str) -> str:
    if what == "user":
        raise wisp.UserError("no")
    if what == "denied":
        raise wisp.PermissionDenied()
    if what == "missing":
        raise wisp.NotFound()
    raise RuntimeError("boom")


@wisp.command(rate_limit=["1/60s per user"])
async def once(ctx: wisp.WispContext) -> str:
    return "once"


@wisp.event_handler("member_join")
async def greet_member(ctx: wisp.WispContext, **payload: object) -> None:
    if payload.get("fail"):
        raise RuntimeError("greeting failed")


@wisp.job("email.send")
async def send_email(ctx: wisp.WispContext, payload: dict[str, str]) -> str:
    if payload.get("fail"):
        raise ConnectionError("smtp down")
    return "sent"


class Targets:
    @wisp.hookimpl
    def wisp_commands(self) -> list[wisp.Command]:
        return [fine, picky, once]

    @wisp.hookimpl
    def wisp_event_handlers(self) -> list[wisp.EventHandler]:
        return [greet_member]

    @wisp.hookimpl
    def wisp_job_handlers(self) -> dict[str, object]:
        return {"email.send": send_email}


def make_app(project, toml: str = "", plugins=("metrics", "ratelimit"), **kw) -> wisp.Wisp:
    project.write("wisp.toml", toml)
    app = project.app(plugins=list(plugins), **kw)
    app.register(Targets(), "targets")
    return app


@pytest.mark.needs_plugin("ratelimit")
async def test_every_invocation_is_counted_by_name_and_status_with_its_latency(
    project,
) -> None:
    app = make_app(project)
    async with app:
        metrics = app.services.get("metrics")
        assert metrics_of(app) is metrics
        for _ in range(3):
            assert (await app.call("fine")).ok
        for what in ("user", "denied", "missing", "crash", "crash"):
            assert not (await app.call("picky", {"what": what})).ok
        assert (await app.call("once", user_id=1)).ok
        limited = await app.call("once", user_id=1)
        assert isinstance(limited.error, wisp.RateLimited)
        await app.emit("member_join", {})
        await app.emit("member_join", {"fail": True})
        assert (await app.run_job("email.send", {})).ok
        assert not (await app.run_job("email.send", {"fail": "yes"})).ok

        v = metrics.value
        assert v("wisp.commands.fine.ok", command="fine", status="ok") == 3
        assert v("wisp.commands.fine.duration", command="fine") == 3
        for status in ("user_error", "denied", "not_found"):
            assert v(f"wisp.commands.picky.{status}", command="picky", status=status) == 1
        assert v("wisp.commands.picky.error", command="picky", status="error") == 2
        assert v("wisp.commands.picky.duration", command="picky") == 5
        assert v("wisp.commands.once.rate_limited", command="once", status="rate_limited") == 1
        assert v("wisp.ratelimits.once.limited", command="once", status="limited") == 1
        handler = greet_member.name
        ev = {"event": "member_join", "handler": handler}
        assert v("wisp.events.member_join.ok", status="ok", **ev) == 1
        assert v("wisp.events.member_join.error", status="error", **ev) == 1
        assert v("wisp.jobs.email.send.ok", job="email.send", status="ok") == 1
        assert v("wisp.jobs.email.send.error", job="email.send", status="error") == 1
        # The histogram measured the calls, it did not just count them.
        duration = metrics.get("wisp.commands.fine.duration", command="fine")
        assert duration.sum > 0 and duration.max <= duration.sum
        # Only what happened is listed: no metric for commands never called.
        assert not [m for m in metrics if "help" in m.name]
        families = {m.family for m in metrics}
        assert {"wisp.commands", "wisp.commands.duration", "wisp.events", "wisp.jobs"} <= families


@pytest.mark.needs_plugin("accesslog", "ratelimit")
async def test_the_middleware_sits_outside_policy_and_rate_limits(project) -> None:
    app = make_app(project, plugins=("metrics", "ratelimit", "accesslog")).configure()
    chain = [m.name for m in app._compiled[app.commands["once"]].middleware]
    assert chain == ["accesslog", "metrics", "ratelimit"]


@pytest.mark.needs_plugin("ratelimit")
async def test_events_can_be_left_out(project) -> None:
    app = make_app(project, "[metrics]\nevents = false\n")
    async with app:
        await app.emit("member_join", {})
        await app.call("fine")
        assert not [m for m in app.services.get("metrics") if m.family == "wisp.events"]
        m = app.services.get("metrics")
        assert m.value("wisp.commands.fine.ok", command="fine", status="ok") == 1


@pytest.mark.needs_plugin("ratelimit")
async def test_other_plugins_record_outcomes_through_the_api(project) -> None:
    app = make_app(project)
    async with app:
        record_outcome(app, "wisp.sagas", "checkout", "compensated", 0.25, guild=3)
        m = app.services.get("metrics")
        labels = {"saga": "checkout", "status": "compensated", "guild": 3}
        assert m.value("wisp.sagas.checkout.compensated", **labels) == 1
        assert m.get("wisp.sagas.checkout.duration", saga="checkout", guild=3).sum == 0.25
        # Code uses the service the way the source documents show.
        service = wisp.WispContext(app=app, invocation_type=wisp.InvocationType.CLI, name="x")
        service.service("metrics").increment("commands.executed")
        service.service("metrics").timing("command.duration", 0.01)
        assert m.value("commands.executed") == 1


@pytest.mark.needs_plugin("cache", "ratelimit")
async def test_blocking_metrics_leaves_no_middleware_and_a_silent_api(project) -> None:
    app = make_app(project, plugins=("ratelimit", "cache"))
    async with app:
        assert metrics_of(app) is None
        record_outcome(app, "wisp.sagas", "checkout", "completed")  # a no-op
        assert "metrics" not in app.services
        assert [m.name for m in app._compiled[app.commands["fine"]].middleware] == []
        assert (await app.call("fine")).ok
        cache = app.services.get("cache")  # the cache works without metrics
        assert await cache.get_or_set("k", lambda: 1) == 1


@pytest.mark.needs_plugin("ratelimit")
def test_bad_config_names_the_key(project) -> None:
    app = make_app(project, "[metrics]\nsnapshot_seconds = 0\nsnapshot_dir = ' '\n")
    with pytest.raises(wisp.ConfigError) as info:
        app.configure()
    text = str(info.value)
    assert "metrics.snapshot_seconds: must be greater than 0" in text


# -- resilience -------------------------------------------------------------------------

BREAKER = """
[[resilience.policies.api]]
pattern = "breaker"
failure_threshold = 2
open_seconds = 60
"""


@wisp.command(resilience="api")
async def fetch(ctx: wisp.WispContext) -> str:
    raise ConnectionError("api down")


@pytest.mark.needs_plugin("breaker", "resilience")
async def test_breaker_transitions_and_refusals_are_counted(project) -> None:
    project.write("wisp.toml", BREAKER)
    app = project.app(plugins=["metrics", "resilience", "breaker"])

    class P:
        @wisp.hookimpl
        def wisp_commands(self) -> list[wisp.Command]:
            return [fetch]

    app.register(P(), "p")
    async with app:
        for _ in range(3):
            await app.call("fetch")
        await asyncio.sleep(0)  # events are delivered after the call step
        await asyncio.sleep(0)
        m = app.services.get("metrics")
        b = {"breaker": "api.breaker"}
        assert m.value("wisp.breakers.api.breaker.open", status="open", **b) == 1
        assert m.value("wisp.breakers.api.breaker.state", **b) == 2
        assert m.value("wisp.breakers.api.breaker.rejected", status="rejected", **b) == 1
        assert m.value("wisp.breakers.api.breaker.failure", status="failure", **b) == 2
        refused = {"command": "fetch", "status": "circuit_open"}
        assert m.value("wisp.commands.fetch.circuit_open", **refused) == 1
        assert m.value("wisp.commands.fetch.error", command="fetch", status="error") == 2
    # Stopped: the listener is gone, a later event reaches nobody's registry.
    from wisp.plugins.resilience.api import global_bus

    assert m.on_resilience_event not in global_bus._listeners


# -- snapshots and `wisp metrics` ----------------------------------------------------------


def run_cli(exe: str, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WISP_")}
    return subprocess.run(
        [exe, "--rootdir", str(root), "metrics", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.mark.needs_plugin("ratelimit")
@pytest.mark.slow
async def test_wisp_metrics_prints_the_last_run(project, wisp_exe) -> None:
    app = make_app(project, "[wisp]\nautoload = false\nplugins = ['metrics']\n")
    async with app:
        await app.call("fine")
        await app.call("fine")
        await app.call("picky", {"what": "crash"})
    files = list((project.root / ".wisp" / "metrics").glob("*.json"))
    assert [f.name for f in files] == [f"{os.getpid()}.json"]
    out = run_cli(wisp_exe, project.root)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"last run: pid {os.getpid()}")
    values = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert values["wisp.commands.fine.ok"] == ["2"]
    assert values["wisp.commands.picky.error"] == ["1"]
    assert values["wisp.commands.fine.duration"][0] == "count=2"
    shown = run_cli(wisp_exe, project.root, "--json", "--prefix", "wisp.commands.fine")
    doc = json.loads(shown.stdout)
    assert doc["running"] is False
    assert {m["name"] for m in doc["metrics"]} == {
        "wisp.commands.fine.ok",
        "wisp.commands.fine.duration",
    }

    # A run that records nothing (a `wisp doctor`) leaves the last run's snapshot alone.
    app = make_app(project, "[wisp]\nautoload = false\nplugins = ['metrics']\n")
    async with app:
        pass
    assert "wisp.commands.fine.ok" in run_cli(wisp_exe, project.root).stdout


@pytest.mark.needs_plugin("ratelimit")
@pytest.mark.slow
async def test_wisp_metrics_prints_a_running_bot(project, wisp_exe) -> None:
    app = make_app(project, "[metrics]\nsnapshot_seconds = 0.05\n")
    path = project.root / ".wisp" / "metrics" / f"{os.getpid()}.json"
    async with app:
        await app.call("fine")
        while not path.exists() or '"wisp.commands.fine.ok"' not in path.read_text():
            await asyncio.sleep(0.02)
        out = await asyncio.to_thread(run_cli, wisp_exe, project.root)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"running: pid {os.getpid()}")
        assert "refreshed every 0.05s" in out.stdout
        assert "wisp.commands.fine.ok" in out.stdout
    assert json.loads(path.read_text())["running"] is False


def test_wisp_metrics_without_a_snapshot_says_what_to_do(project, wisp_exe) -> None:
    project.write("wisp.toml", "[wisp]\nautoload = false\nplugins = ['metrics']\n")
    out = run_cli(wisp_exe, project.root)
    assert out.returncode == 1
    assert "no snapshot in" in out.stderr and "wisp run" in out.stderr
    out = run_cli(wisp_exe, project.root, "--pid", "1")
    assert out.returncode == 1 and "no snapshot of pid 1" in out.stderr


@pytest.mark.slow
def test_an_offline_run_leaves_its_metrics(project, wisp_exe) -> None:
    project.write(
        "wisp.toml",
        '[wisp]\nautoload = false\nplugins = ["discord", "basics", "metrics"]\n',
    )
    project.write("script.txt", "/ping\n/ping\n/help\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WISP_")}
    run = subprocess.run(
        [wisp_exe, "--rootdir", str(project.root), "run", "--offline", "--script", "script.txt"],
        capture_output=True,
        text=True,
        env=env,
        cwd=project.root,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = run_cli(wisp_exe, project.root)
    assert out.returncode == 0, out.stderr
    assert "run --offline --script script.txt)" in out.stdout.splitlines()[0]
    values = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()[1:]}
    assert values["wisp.commands.ping.ok"] == ["2"]
    assert values["wisp.commands.help.ok"] == ["1"]


def test_counter_handles_are_plain_objects() -> None:
    c = Counter("a", "a", {})
    c.value += 1
    assert c.snapshot() == {"name": "a", "family": "a", "kind": "counter", "labels": {}, "value": 1}


# -- sagas (through the sagas plugin's wisp_saga_transition hook) ------------------------


@pytest.mark.needs_plugin("sagas", "storage")
async def test_saga_runs_and_steps_are_counted(project) -> None:
    from wisp.plugins.sagas.api import RunStatus, Saga

    saga = Saga("order", version=1)

    @saga.step("reserve")
    async def reserve(step: object) -> str:
        return "ok"

    @saga.compensation("reserve")
    async def unreserve(step: object) -> None:
        return None

    @saga.step("charge", attempts=2)
    async def charge(step: object) -> None:
        raise ConnectionError("card declined")

    class Sagas:
        @wisp.hookimpl
        def wisp_sagas(self) -> list[Saga]:
            return [saga]

    project.write(
        "wisp.toml",
        "[wisp]\nautoload = false\n"
        f'[storage]\nurl = "sqlite+aiosqlite:///{project.root / "s.sqlite3"}"\n'
        "auto_migrate = true\n"
        "[sagas]\nbackoff_seconds = 0.01\nmax_backoff_seconds = 0.02\n",
    )
    app = project.app(plugins=["storage", "sagas", "metrics"])
    app.register(Sagas(), "sagas-here")
    async with app:
        sagas = app.services.get("sagas")
        run = await sagas.wait(await sagas.start("order", {}))
        await sagas.drain()
        assert run.status is RunStatus.COMPENSATED
        m = app.services.get("metrics")
        order = {"saga": "order"}
        assert m.value("wisp.sagas.order.started", status="started", **order) == 1
        assert m.value("wisp.sagas.order.compensated", status="compensated", **order) == 1
        assert m.value("wisp.sagas.order.duration", **order) == 1
        for step, status in (
            ("reserve", "step_completed"),
            ("charge", "step_retrying"),
            ("charge", "step_failed"),
            ("reserve", "compensation_completed"),
        ):
            name = f"wisp.sagas.order.{step}.{status}"
            assert m.value(name, saga="order", step=step, status=status) == 1, name


# -- jobs: the worker's outcomes, and `wisp metrics` of a worker -------------------------

JOBS = """
import wisp



@wisp.job("fine")
async def fine(ctx, payload):
    return "done"


@wisp.job("hopeless", max_attempts=2)
async def hopeless(ctx, payload):
    raise ConnectionError("never works")
"""


@pytest.mark.needs_plugin("jobs", "storage")
@pytest.mark.slow
async def test_a_workers_retries_and_dead_letters_are_counted(project, wisp_exe) -> None:
    db = project.root / "jobs.sqlite3"
    project.write(
        "wisp.toml",
        '[wisp]\nautoload = false\nplugins = ["storage", "jobs", "metrics"]\n'
        'command_paths = ["bot"]\n'
        f'[storage]\nurl = "sqlite+aiosqlite:///{db}"\nauto_migrate = true\n'
        "[jobs]\npoll_seconds = 0.05\nbackoff_seconds = 0.01\nmax_backoff_seconds = 0.02\n",
    )
    project.write("bot/jobs.py", JOBS)
    async with project.app() as app:
        jobs = app.services.get("jobs")
        await jobs.enqueue("fine", {})
        await jobs.enqueue("hopeless", {})
    env = {k: v for k, v in os.environ.items() if not k.startswith("WISP_")}
    worker = await asyncio.to_thread(
        subprocess.run,
        [wisp_exe, "--rootdir", str(project.root), "worker", "--burst"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr
    out = run_cli(wisp_exe, project.root, "--prefix", "wisp.jobs")
    assert out.returncode == 0, out.stderr
    assert "(wisp --rootdir" in out.stdout.splitlines()[0]
    assert " worker --burst)" in out.stdout.splitlines()[0]
    values = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()[1:]}
    assert values["wisp.jobs.fine.ok"] == ["1"]
    assert values["wisp.jobs.hopeless.error"] == ["2"]  # one per attempt
    assert values["wisp.jobs.hopeless.retried"] == ["1"]
    assert values["wisp.jobs.hopeless.dead_lettered"] == ["1"]
    assert "wisp.jobs.fine.dead_lettered" not in values
