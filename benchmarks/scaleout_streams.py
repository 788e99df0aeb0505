"""Event streams: one gateway-side publisher, two worker processes.

Cases, each on the servers named by ``WISP_BENCH_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) and ``WISP_BENCH_NATS_URL`` (default
``nats://127.0.0.1:4222``):

* ``bare redis``  - the floor: pipelined ``XADD`` of 1 KiB entries to 4 streams,
  two processes each ``XREADGROUP``-ing two of them and ``XACK``-ing; no
  parsing, no leases, no handlers.
* ``wisp redis``  - the ``eventstream`` plugin on ``redisstreams``: the
  publisher the gateway installs (``Publisher.publish``, what discord.py's
  parser table calls for each MESSAGE_CREATE) and two ``EventWorker``
  processes logged in (REST only) to the offline fake Discord, rebuilding each
  ``discord.Message`` and running a Wisp event handler through the router and
  pipeline, then acking.
* ``wisp nats``   - the same on NATS JetStream (plugin ``nats``).

Printed per case: dispatches/s (everything published as fast as possible,
timed until the last one is handled), p50/p99 end-to-end latency (publish to
handler) at a fifth of that rate, and a run at that rate where one worker is
SIGKILLed half-way: how many events were lost (must be 0) and handled twice
(at least once: the killed worker's unacked ones).  Ratios are against
``bare redis``.  Aims: >= 10,000/s, p99 < 50 ms, 0 lost.

Run::

    python benchmarks/scaleout_streams.py            # ~1 min
    python benchmarks/scaleout_streams.py --quick    # ~20 s, noisier

``WISP_BENCH_PROFILE=DIR`` runs each Wisp worker under cProfile and writes
``DIR/<case>-<worker>.prof`` when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REDIS_URL = os.environ.get("WISP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("WISP_BENCH_NATS_URL", "nats://127.0.0.1:4222")
SHARDS = 4
PAD = "x" * 560  # brings a MESSAGE_CREATE payload to about 1 KiB of JSON


# -- what a worker process runs ------------------------------------------------------------


class _Recorder:
    """A plugin: one event handler writing ``id latency_us`` per message it handles."""

    def __init__(self, out: int) -> None:
        self.out = out

    def handlers(self) -> list[Any]:
        import wisp

        out = self.out

        async def seen(ctx: Any, message: Any) -> None:
            sent = float(message.content.split(" ", 1)[0])
            line = f"{message.id} {int((time.time() - sent) * 1e6)}\n"
            os.write(out, line.encode())

        return [wisp.event_handler("message", ignore_bots=False)(seen)]


async def _wisp_worker(root: Path, name: str, out: int) -> None:
    import wisp
    from wisp.plugins.eventstream import enable_worker

    recorder = _Recorder(out)

    class Plugin:
        @wisp.hookimpl
        def wisp_event_handlers(self) -> list[Any]:
            return recorder.handlers()

    app = wisp.Wisp(
        rootdir=root,
        autoload=False,
        env={},
        plugins=["discord", "eventstream", "redis", "redisstreams", "nats"],
    )
    app.register(Plugin(), "bench-recorder")
    enable_worker(app, consumer=name)
    await app.serve()


async def _bare_worker(prefix: str, shards: list[int], name: str, out: int, ready: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    streams = {f"{prefix}{s}": ">" for s in shards}
    await client.ping()
    os.close(os.open(ready, os.O_CREAT | os.O_WRONLY))
    while True:
        found = await client.xreadgroup("bare", name, streams, count=200, block=100)
        pipe = client.pipeline(transaction=False)
        lines = []
        now = time.time()
        for stream, entries in found or ():
            for _, fields in entries:
                lines.append(f"{fields[b'i'].decode()} {int((now - float(fields[b't'])) * 1e6)}\n")
            pipe.xack(stream, "bare", *[e for e, _ in entries])
        if lines:
            os.write(out, "".join(lines).encode())
            await pipe.execute()


def worker_main(args: argparse.Namespace) -> None:
    out = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    if args.worker == "bare":
        shards = [int(s) for s in args.shards.split(",")]
        ready = str(Path(args.out).with_suffix(".ready"))
        asyncio.run(_bare_worker(args.prefix, shards, args.name, out, ready))
    elif os.environ.get("WISP_BENCH_PROFILE"):  # a directory: one cProfile dump per worker
        import cProfile

        where = Path(os.environ["WISP_BENCH_PROFILE"])
        where.mkdir(parents=True, exist_ok=True)  # before the run, not after it
        with cProfile.Profile() as profile:
            asyncio.run(_wisp_worker(Path(args.root), args.name, out))
        profile.dump_stats(
            Path(os.environ["WISP_BENCH_PROFILE"]) / f"{Path(args.root).name}-{args.name}.prof"
        )
    else:
        asyncio.run(_wisp_worker(Path(args.root), args.name, out))


# -- the publisher side ----------------------------------------------------------------------


def _message(n: int, guild_id: int, channel_id: int, author: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(10**17 + n),
        "channel_id": str(channel_id),
        "guild_id": str(guild_id),
        "author": author,
        "member": {
            "roles": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
        },
        "content": f"{time.time()!r} {PAD}",
        "timestamp": "2024-01-01T00:00:00+00:00",
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": False,
        "type": 0,
        "flags": 0,
        "nonce": str(n),
    }


class Case:
    """One transport: set up, publish, count what workers wrote, tear down."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.tmp = tmp / kind.replace(" ", "-")
        self.tmp.mkdir()
        self.tag = uuid.uuid4().hex[:8]
        self.prefix = f"wisp:bench:{self.tag}:"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.outs: list[Path] = []
        self.app: Any = None
        self.fake: Any = None
        self.publisher: Any = None
        self.client: Any = None
        self.guilds: list[Any] = []
        self.phase = 0
        self._bare: list[tuple[int, bytes, str]] = []

    # setup ---------------------------------------------------------------------------

    async def start(self) -> None:
        from wisp.plugins.discord.fake import FakeDiscord, FakeGuild, guild_id_for_shard

        self.guilds = [FakeGuild(id=guild_id_for_shard(s, SHARDS)) for s in range(SHARDS)]
        if self.kind == "bare redis":
            import redis.asyncio as aioredis

            self.client = aioredis.Redis.from_url(REDIS_URL)
            for s in range(SHARDS):
                await self.client.xgroup_create(f"{self.prefix}{s}", "bare", id="0", mkstream=True)
            return
        self.fake = FakeDiscord(self.guilds)
        await self.fake.start()
        transport = "redis" if self.kind == "wisp redis" else "nats"
        (self.tmp / "wisp.toml").write_text(
            # The tuning docs/scaling-out.md gives event workers; max_inflight is
            # left at its default.
            '[wisp]\nlog_level = "WARNING"\ngc_threshold = 10000\n'
            f'[discord]\ntoken = "bench"\napi_url = "{self.fake.api_base}"\n'
            f'[events]\ntransport = "{transport}"\nshard_count = {SHARDS}\nlease_seconds = 2.0\n'
            f'[redis]\nurl = "{REDIS_URL}"\n'
            f'[redisstreams]\nprefix = "{self.prefix}"\n'
            f'[nats]\nurl = "{NATS_URL}"\nstream = "B_{self.tag}"\nsubject = "b{self.tag}.ev"\n'
            'storage = "memory"\nack_wait = 3.0\n'
        )
        import wisp
        from wisp.plugins.eventstream import enable, shard_count
        from wisp.plugins.eventstream.publisher import Publisher

        self.app = wisp.Wisp(
            rootdir=self.tmp,
            autoload=False,
            env={},
            plugins=["eventstream", "redis", "redisstreams", "nats"],
        )
        self.app.configure()
        enable(self.app)
        await self.app.start()
        transport_obj = self.app.services.get("eventstream").transport

        class _Client:  # what Publisher reads of discord.py's client
            user = None

        self.publisher = Publisher(_Client(), transport_obj, shard_count(self.app), self.app)  # type: ignore[arg-type]
        for guild in self.guilds:
            self.publisher.on_state("GUILD_CREATE", self.fake.guild_payload(guild))
        await self.publisher.write_dirty()

    def spawn(self, name: str, shards: str = "") -> subprocess.Popen[bytes]:
        out = self.tmp / f"{name}-{self.phase}.out"
        out.touch()
        self.outs.append(out)
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            "bare" if self.kind == "bare redis" else "wisp",
            "--out",
            str(out),
            "--name",
            name,
            "--root",
            str(self.tmp),
            "--prefix",
            self.prefix,
            "--shards",
            shards,
        ]
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    async def start_workers(self) -> list[subprocess.Popen[bytes]]:
        self.phase += 1
        if self.kind == "bare redis":
            procs = [self.spawn("w1", "0,1"), self.spawn("w2", "2,3")]
            deadline = time.monotonic() + 30
            while not all(o.with_suffix(".ready").exists() for o in self.outs[-2:]):
                if time.monotonic() > deadline:
                    raise RuntimeError("bare workers did not start")
                await asyncio.sleep(0.05)
            return procs
        procs = [self.spawn(f"w{self.phase}a"), self.spawn(f"w{self.phase}b")]
        transport = self.app.services.get("eventstream").transport
        deadline = time.monotonic() + 30
        while True:  # both own two shards: balanced
            held = await transport.holders("workers")
            owners = [v for k, v in held.items() if k.startswith("shard.")]
            if (
                len(owners) == SHARDS
                and len(set(owners)) == 2
                and all(owners.count(o) == 2 for o in owners)
            ):
                return procs
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind}: workers did not share the shards: {held}")
            await asyncio.sleep(0.1)

    async def stop_workers(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()

    async def stop(self) -> None:
        await self.stop_workers()
        if self.client is not None:
            keys = [k async for k in self.client.scan_iter(f"{self.prefix}*")]
            if keys:
                await self.client.delete(*keys)
            await self.client.aclose()
        if self.app is not None:
            transport = self.app.services.get("eventstream").transport
            if self.kind == "wisp redis":
                client = transport.client
                keys = [k async for k in client.scan_iter(f"{self.prefix}*")]
                if keys:
                    await client.delete(*keys)
            else:
                for name in (
                    f"B_{self.tag}",
                    f"KV_B_{self.tag}_guilds",
                    f"KV_B_{self.tag}_leases_workers",
                ):
                    with contextlib.suppress(Exception):
                        await transport.js.delete_stream(name)
            await self.app.stop()
        if self.fake is not None:
            await self.fake.stop()

    # publishing ------------------------------------------------------------------------

    def publish(self, n: int) -> None:
        guild = self.guilds[n % SHARDS]
        channel = guild.channels[0].id
        author = {
            "id": str(guild.owner_id),
            "username": "owner",
            "discriminator": "0",
            "avatar": None,
            "bot": False,
        }
        data = _message(n, guild.id, channel, author)
        if self.publisher is not None:
            self.publisher.publish("MESSAGE_CREATE", data)
        else:
            self._bare.append((n % SHARDS, json.dumps(data).encode(), data["id"]))

    async def flush(self) -> None:
        if self.publisher is not None:
            await self.publisher.transport.flush()
            return
        while self._bare:
            batch, self._bare = self._bare[:200], self._bare[200:]
            pipe = self.client.pipeline(transaction=False)
            for shard, body, ident in batch:
                pipe.xadd(
                    f"{self.prefix}{shard}",
                    {"d": body, "i": ident, "t": repr(time.time())},
                    maxlen=1_000_000,
                    approximate=True,
                )
            await pipe.execute()

    def seen(self) -> tuple[dict[str, int], list[int], float]:
        """Ids handled (and how often), latencies in µs, and when the newest file changed."""
        counts: dict[str, int] = {}
        lat: list[int] = []
        newest = 0.0
        for out in self.outs[-2:] if self.phase else []:
            newest = max(newest, out.stat().st_mtime)
            for line in out.read_text().splitlines():
                ident, _, us = line.partition(" ")
                counts[ident] = counts.get(ident, 0) + 1
                if us:
                    lat.append(int(us))
        return counts, lat, newest

    async def wait_all(self, ids: set[str], timeout: float = 120) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            counts, _, _ = self.seen()
            if ids <= counts.keys():
                return counts
            if time.monotonic() > deadline:
                missing = len(ids - counts.keys())
                raise RuntimeError(f"{self.kind}: {missing} of {len(ids)} never handled")
            await asyncio.sleep(0.05)


async def throughput(case: Case, n: int, first: int) -> tuple[float, float]:
    """Publish ``n`` as fast as possible: events/s stored in the transport, and
    events/s until the last is handled."""
    await case.start_workers()
    t0 = time.time()
    for i in range(n):
        case.publish(first + i)
        if i % 500 == 499:
            await asyncio.sleep(0)
            if case.publisher is None:
                await case.flush()
    await case.flush()
    stored = n / max(1e-9, time.time() - t0)
    await case.wait_all({str(10**17 + first + i) for i in range(n)})
    _, _, newest = case.seen()
    await case.stop_workers()
    return stored, n / max(1e-9, newest - t0)


async def paced(case: Case, rate: float, seconds: float, first: int, kill: bool) -> dict[str, Any]:
    """Publish at ``rate``/s for ``seconds``; latencies, lost and duplicates."""
    procs = await case.start_workers()
    total = int(rate * seconds)
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    start = time.monotonic()
    sent = 0
    while sent < total:
        for _ in range(min(per_tick, total - sent)):
            case.publish(first + sent)
            sent += 1
        if case.publisher is None:
            await case.flush()
        if kill and sent >= total // 2 and procs[0].poll() is None:
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait()
        delay = start + (sent / per_tick) * tick - time.monotonic()
        await asyncio.sleep(max(0.0, delay))
    await case.flush()
    ids = {str(10**17 + first + i) for i in range(total)}
    with contextlib.suppress(RuntimeError):
        await case.wait_all(ids, timeout=60)
    counts, lat, _ = case.seen()
    await case.stop_workers()
    lost = len(ids - counts.keys())
    twice = sum(1 for i in ids if counts.get(i, 0) > 1)
    lat.sort()
    return {
        "p50": lat[len(lat) // 2] / 1000 if lat else float("nan"),
        "p99": lat[int(len(lat) * 0.99)] / 1000 if lat else float("nan"),
        "lost": lost,
        "twice": twice,
        "n": total,
    }


async def main(args: argparse.Namespace) -> None:
    n = 10_000 if args.quick else 40_000
    seconds = 3.0 if args.quick else 6.0
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("bare redis", "wisp redis", "wisp nats"):
            case = Case(kind, Path(tmp))
            try:
                await case.start()
                stored, rate = await throughput(case, n, 0)
                lat = await paced(case, rate / 5, seconds, 10**6, kill=False)
                killed = (
                    await paced(case, rate / 5, seconds, 2 * 10**6, kill=True)
                    if kind != "bare redis"
                    else None
                )
                results[kind] = {"rate": rate, "stored": stored, "lat": lat, "killed": killed}
            finally:
                await case.stop()
            print(f"  {kind}: done", file=sys.stderr)
    base = results["bare redis"]["rate"]
    print(f"one publisher, 2 worker processes, {SHARDS} shard streams, ~1 KiB MESSAGE_CREATE")
    print("  published/s: stored in the transport; handled/s: until the last was handled")
    print(
        f"  {'case':<12} {'published/s':>11} {'handled/s':>10} {'vs bare':>8} {'p50 ms':>7}"
        f" {'p99 ms':>7} {'at /s':>7}  {'kill: lost':>10} {'twice':>6}"
    )
    for kind, r in results.items():
        killed = r["killed"]
        kill = f"{killed['lost']:>10} {killed['twice']:>6}" if killed else f"{'-':>10} {'-':>6}"
        print(
            f"  {kind:<12} {r['stored']:>11,.0f} {r['rate']:>10,.0f} {r['rate'] / base:>7.2f}x"
            f" {r['lat']['p50']:>7.1f} {r['lat']['p99']:>7.1f} {r['rate'] / 5:>7,.0f}  {kill}"
        )
    for kind in ("wisp redis", "wisp nats"):
        r = results[kind]
        print(
            f"  {kind}: aim >= 10,000/s handled {'met' if r['rate'] >= 10_000 else 'MISSED'}"
            f" (published {'met' if r['stored'] >= 10_000 else 'MISSED'}); "
            f"p99 < 50 ms {'met' if r['lat']['p99'] < 50 else 'MISSED'}; "
            f"0 lost on kill {'met' if r['killed']['lost'] == 0 else 'MISSED'}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", choices=["bare", "wisp"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--shards", default="", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.worker:
        worker_main(parsed)
    else:
        asyncio.run(main(parsed))
