"""How many signed interactions per second does one ``wisp serve-interactions``
replica answer, and what does each layer cost?

Cases, each a real aiohttp server on 127.0.0.1 and one keep-alive client
session sending ``--concurrency`` requests at a time:

* ``bare aiohttp``   - a handler that reads the body and returns a fixed
  ``{"type": 4, ...}``: the floor of HTTP on this machine.
* ``bare + ed25519`` - the same plus the Ed25519 check with ``cryptography``
  (what any endpoint must pay).
* ``wisp endpoint``  - the ``interactions`` plugin: signature, timestamp,
  de-duplication (in memory), the interaction fed to discord.py and a Wisp
  command run through the compiled pipeline, answered inline.  The bot is
  logged in (REST only) to the offline fake Discord.

Printed: requests/s, p50 and p99 latency, and each case's cost relative to the
bare floor.  Checks printed beside (never failing): every request with a bad
signature got 401, and a handler slower than 3 s was deferred (type 5) before
Discord's deadline.

Then the replicas case: 1, then 2 real ``wisp serve-interactions`` processes,
each logged in (REST only) to a fake Discord in this process through
``[discord] api_url``, de-duplicating through the idempotency plugin's Redis
backend (shared by both, as in production; ``--no-redis``: per-replica
memory).  The load comes from a separate client process (``--clients`` of
them) that gets every request pre-signed and pre-serialised (unique
interaction ids) before the clock starts, and sends them over keep-alive
connections, ``--concurrency`` per replica, its connections alternating
between the replicas' ports (no balancer process to pay for).  Printed per
case: requests/s, per replica, p50/p99, and the CPU each party really used
(the servers', the client's, Redis' and the rest of the machine's, in cores),
then 2 replicas / 1 replica
as throughput and as throughput per server core: on a 2-core machine the
client and Redis take their share, so two replicas cannot get two cores.
Checks on the replicas: bad signatures 401, a 3.5 s handler deferred before
3 s on each, one interaction id sent to both at once answered 200 and 409,
then 409 by each (run once, also on the replica that ran it).

Run::

    python benchmarks/interactions.py              # ~35 s
    python benchmarks/interactions.py --quick      # ~15 s, noisier
    python benchmarks/interactions.py --replicas-only [--redis-url URL] [--clients 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pickle
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from loguru import logger

import wisp
from wisp.plugins.discord.fake import FakeDiscord, new_snowflake, patched_endpoints
from wisp.plugins.interactions import enable
from wisp.plugins.interactions.signature import BadSignature, Verifier

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
ANSWER = {"type": 4, "data": {"content": "pong"}}


@wisp.command(description="Answer at once.")
async def ping(ctx: wisp.WispContext) -> str:
    return "pong"


@wisp.command(description="Answer after 3.5 s.")
async def crawl(ctx: wisp.WispContext) -> str:
    await asyncio.sleep(3.5)
    return "late"


def signed(payload: dict[str, Any], key: Ed25519PrivateKey = KEY) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    stamp = str(int(time.time()))
    sig = key.sign(stamp.encode() + body).hex()
    return body, {
        "Content-Type": "application/json",
        "X-Signature-Ed25519": sig,
        "X-Signature-Timestamp": stamp,
    }


async def bare_server(verify: bool) -> tuple[web.AppRunner, str]:
    verifier = Verifier(PUBLIC)

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if verify:
            try:
                verifier.verify(
                    request.headers.get("X-Signature-Ed25519"),
                    request.headers.get("X-Signature-Timestamp"),
                    body,
                )
            except BadSignature:
                return web.json_response({"error": "bad"}, status=401)
        json.loads(body)
        return web.json_response(ANSWER)

    app = web.Application()
    app.router.add_post("/interactions", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/interactions"


async def load(
    url: str, make: Callable[[], dict[str, Any]], total: int, concurrency: int
) -> tuple[float, list[float], dict[int, int]]:
    """Send ``total`` signed requests; return requests/s, latencies (s), statuses."""
    requests = [signed(make()) for _ in range(total)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = list(reversed(requests))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            while queue:
                body, headers = queue.pop()
                start = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return total / elapsed, latencies, statuses


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


async def one_process(quick: bool) -> None:
    """The bare floors and the endpoint in this process (client in the same loop)."""
    total = 500 if quick else 3000
    concurrency = 16
    fake = FakeDiscord()
    await fake.start()
    template = (await fake.interaction_create("ping", gateway=False)).payload
    crawl_payload = (await fake.interaction_create("crawl", gateway=False)).payload

    def make(base: dict[str, Any] = template) -> dict[str, Any]:
        return {**base, "id": str(new_snowflake())}

    results: dict[str, tuple[float, list[float], dict[int, int]]] = {}
    for name, verify in (("bare aiohttp", False), ("bare + ed25519", True)):
        runner, url = await bare_server(verify)
        await load(url, make, total // 10, concurrency)  # warm up
        results[name] = await load(url, make, total, concurrency)
        await runner.cleanup()

    with tempfile.TemporaryDirectory() as tmp, patched_endpoints(fake):
        root = Path(tmp)
        (root / "wisp.toml").write_text(f'[interactions]\npublic_key = "{PUBLIC}"\n')
        app = wisp.Wisp(
            rootdir=root, autoload=False, env={}, plugins=["discord", "interactions", __name__]
        )
        service = enable(app, offline=True, port=0)
        await app.start()
        try:
            await load(service.url, make, total // 10, concurrency)
            results["wisp endpoint"] = await load(service.url, make, total, concurrency)
            # Checks: bad signatures, and a slow handler deferred before 3 s.
            other = Ed25519PrivateKey.generate()
            bad = 0
            async with aiohttp.ClientSession() as session:
                for _ in range(50):
                    body, headers = signed(make(), other)
                    async with session.post(service.url, data=body, headers=headers) as r:
                        bad += r.status == 401
                body, headers = signed(make(crawl_payload))
                start = time.perf_counter()
                async with session.post(service.url, data=body, headers=headers) as r:
                    slow_answer = await r.json()
                slow_seconds = time.perf_counter() - start
        finally:
            await app.stop()
    await fake.stop()

    floor = results["bare aiohttp"][0]
    print(f"{total} signed interactions, {concurrency} at a time, one process")
    print(f"  {'case':<16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs bare':>9}  statuses")
    for name, (rate, lat, statuses) in results.items():
        print(
            f"  {name:<16} {rate:>9,.0f} {p(lat, 50):>8.1f} {p(lat, 99):>8.1f} "
            f"{floor / rate:>8.2f}x  {statuses}"
        )
    print(f"  bad signatures answered 401: {bad}/50")
    print(
        f"  3.5 s handler answered type {slow_answer.get('type')} after {slow_seconds:.2f}s "
        "(deferred before Discord's 3 s: "
        f"{'yes' if slow_answer.get('type') == 5 and slow_seconds < 3 else 'NO'})"
    )


# -- replicas: real `wisp serve-interactions` processes --------------------------------

WISP = str(Path(sys.executable).parent / "wisp")
COMMANDS_FILE = """
import asyncio

import wisp


@wisp.command(description="Answer at once.")
async def ping(ctx: wisp.WispContext) -> str:
    return "pong"


@wisp.command(description="Answer after 3.5 s.")
async def crawl(ctx: wisp.WispContext) -> str:
    await asyncio.sleep(3.5)
    return "late"
"""


def raw_request(payload: dict[str, Any], key: Ed25519PrivateKey = KEY) -> bytes:
    """One signed HTTP/1.1 POST, ready for the socket (keep-alive)."""
    body, headers = signed(payload, key)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (
        f"POST /interactions HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def fire(
    requests: list[bytes], targets: list[int], concurrency: int
) -> tuple[float, float, list[float], dict[int, int]]:
    """Send ``requests`` over ``concurrency`` keep-alive connections, connection i to
    port ``targets[i % len(targets)]``; return start, end (monotonic), latencies, statuses."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = list(reversed(requests))
    conns = [await asyncio.open_connection("127.0.0.1", targets[i % len(targets)])
             for i in range(concurrency)]  # fmt: skip

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clock = time.perf_counter
        while queue:
            request = queue.pop()
            began = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            at = lower.index(b"content-length:") + 15
            length = int(lower[at : lower.index(b"\r\n", at)])
            await reader.readexactly(length)
            latencies.append(clock() - began)
            statuses[status] = statuses.get(status, 0) + 1

    start = time.monotonic()
    await asyncio.gather(*(worker(r, w) for r, w in conns))
    end = time.monotonic()
    for _, writer in conns:
        writer.close()
    return start, end, latencies, statuses


async def client_main(spec: dict[str, Any]) -> None:
    """``--client SPEC``: warm up, say ready, wait for go, fire, print the result."""
    await fire(spec["warm"], spec["targets"], spec["concurrency"])
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    cpu = time.process_time()
    start, end, latencies, statuses = await fire(spec["run"], spec["targets"], spec["concurrency"])
    print(json.dumps({
        "start": start, "end": end, "latencies": latencies,
        "statuses": statuses, "cpu": time.process_time() - cpu,
    }), flush=True)  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy so far (Linux /proc/stat)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def redis_cpu(url: str | None) -> float:
    """Redis server's used CPU seconds (INFO cpu), 0 without Redis."""
    if url is None:
        return 0.0
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)  # type: ignore[no-untyped-call]
    try:
        info = await client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        await client.aclose()


async def redis_reachable(url: str) -> str | None:
    """None if Redis answers at ``url``, else why not."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, socket_connect_timeout=2)  # type: ignore[no-untyped-call]
    try:
        await client.ping()
        return None
    except Exception as exc:
        return repr(exc)
    finally:
        await client.aclose()


class Replicas:
    """``n`` ``wisp serve-interactions`` processes on one project and one fake Discord."""

    def __init__(self, root: Path, fake: FakeDiscord, redis_url: str | None, prefix: str):
        self.root = root
        self.procs: list[asyncio.subprocess.Process] = []
        self.ports: list[int] = []
        plugins = ["discord", "interactions"] + (["redis", "idempotency"] if redis_url else [])
        (root / "commands").mkdir(exist_ok=True)
        (root / "commands" / "bench_commands.py").write_text(COMMANDS_FILE)
        toml = textwrap.dedent(f"""\
            [wisp]
            autoload = false
            log_level = "WARNING"
            plugins = {json.dumps(plugins)}
            command_paths = ["commands"]
            [discord]
            token = "bench"
            api_url = "{fake.api_base}"
            gateway_url = "{fake.gateway_url}"
            [interactions]
            public_key = "{PUBLIC}"
            host = "127.0.0.1"
            """)
        if redis_url:
            toml += (
                f'[redis]\nurl = "{redis_url}"\n'
                f'[idempotency]\nbackend = "redis"\nredis_prefix = "{prefix}"\n'
            )
        (root / "wisp.toml").write_text(toml)

    async def start(self, n: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WISP_", "DISCORD_"))}
        for i in range(n):
            port = free_port()
            log = (self.root / f"replica-{i}.log").open("ab")
            self.procs.append(await asyncio.create_subprocess_exec(
                WISP, "--rootdir", str(self.root), "serve-interactions", "--port", str(port),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            ))  # fmt: skip
            self.ports.append(port)
        ping = {"id": "1", "type": 1, "application_id": "1", "token": "t"}
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            for i, port in enumerate(self.ports):
                while True:
                    if self.procs[i].returncode is not None or time.monotonic() > deadline:
                        tail = (self.root / f"replica-{i}.log").read_text()[-2000:]
                        raise RuntimeError(f"replica {i} did not come up:\n{tail}")
                    body, headers = signed(ping)
                    with contextlib.suppress(aiohttp.ClientError):
                        url = f"http://127.0.0.1:{port}/interactions"
                        async with session.post(url, data=body, headers=headers) as r:
                            if r.status == 200:
                                break
                    await asyncio.sleep(0.2)

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}/interactions" for port in self.ports]

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self.procs.clear()
        self.ports.clear()


async def drive(
    replicas: Replicas, make: Callable[[], dict[str, Any]], args: argparse.Namespace,
    redis_url: str | None,
) -> dict[str, Any]:  # fmt: skip
    """Pre-sign, start the client process(es), time one run; return what was measured."""
    n = len(replicas.ports)
    per_client_conns = max(1, args.concurrency * n // args.clients)
    total = args.requests * n
    specs = []
    for c in range(args.clients):
        # Client c's connections start at replica c, so ports alternate across clients too.
        targets = [replicas.ports[(c + i) % n] for i in range(n)]
        spec = {
            "targets": targets,
            "concurrency": per_client_conns,
            "warm": [raw_request(make()) for _ in range(args.requests // 10 // args.clients)],
            "run": [raw_request(make()) for _ in range(total // args.clients)],
        }
        path = replicas.root / f"client-{n}-{c}.pickle"
        path.write_bytes(pickle.dumps(spec))
        specs.append(path)
    clients = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--client",
            str(path),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            limit=256 * 1024 * 1024,  # the latencies come back as one JSON line
        )
        for path in specs
    ]
    for client in clients:
        assert client.stdout is not None
        line = await client.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"load client failed: {line!r}")
    servers_before = [cpu_seconds(proc.pid) for proc in replicas.procs]
    redis_before = await redis_cpu(redis_url)
    busy_before = machine_busy_seconds()
    for client in clients:
        assert client.stdin is not None
        client.stdin.write(b"go\n")
        await client.stdin.drain()
    outs = []
    for client in clients:
        assert client.stdout is not None
        outs.append(json.loads(await client.stdout.readline()))
        await client.wait()
    busy_after = machine_busy_seconds()
    servers_after = [cpu_seconds(proc.pid) for proc in replicas.procs]
    redis_after = await redis_cpu(redis_url)
    start = min(o["start"] for o in outs)
    elapsed = max(o["end"] for o in outs) - start
    statuses: dict[int, int] = {}
    for o in outs:
        for k, v in o["statuses"].items():
            statuses[int(k)] = statuses.get(int(k), 0) + v
    return {
        "replicas": n,
        "requests": total,
        "rate": total / elapsed,
        "latencies": [x for o in outs for x in o["latencies"]],
        "statuses": statuses,
        "server_cores": [
            (a - b) / elapsed for a, b in zip(servers_after, servers_before, strict=True)
        ],
        "client_cores": sum(o["cpu"] for o in outs) / elapsed,
        "redis_cores": (redis_after - redis_before) / elapsed,
        "busy_cores": (busy_after - busy_before) / elapsed,
    }


async def replica_checks(
    replicas: Replicas, fake: FakeDiscord, make: Callable[..., dict[str, Any]]
) -> dict[str, Any]:
    """Bad signatures, slow handlers and one duplicated id, across the replicas."""
    urls = replicas.urls
    other = Ed25519PrivateKey.generate()
    crawl = (await fake.interaction_create("crawl", gateway=False)).payload
    async with aiohttp.ClientSession() as session:

        async def post(url: str, payload: dict[str, Any], key: Ed25519PrivateKey = KEY) -> Any:
            body, headers = signed(payload, key)
            began = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as r:
                answer = await r.json()
                return r.status, answer, time.perf_counter() - began

        bad = await asyncio.gather(*(post(urls[i % len(urls)], make(), other) for i in range(50)))
        slow = await asyncio.gather(*(post(url, make(crawl)) for url in urls))
        twice = make()
        dup = await asyncio.gather(*(post(url, twice) for url in urls))
        # Discord redelivering after the answer: refused by every replica, the one that ran it too.
        again = [(await post(url, twice))[0] for url in urls]
    return {
        "bad401": sum(status == 401 for status, _, _ in bad),
        "slow": [(answer.get("type"), seconds) for _, answer, seconds in slow],
        "duplicate": sorted(status for status, _, _ in dup),
        "again": again,
    }


async def replicas_case(args: argparse.Namespace) -> None:
    """1 then 2 ``wisp serve-interactions`` processes under one client load."""
    redis_url: str | None = None
    if not args.no_redis:
        url = args.redis_url
        why = await redis_reachable(url)
        if why is None:
            redis_url = url
        else:
            print(f"Redis at {url} unreachable ({why}): replicas de-duplicate in memory")
    prefix = f"bench:interactions:{uuid.uuid4().hex[:8]}:"
    load_before = os.getloadavg()[0]
    fake = FakeDiscord()
    await fake.start()
    template = (await fake.interaction_create("ping", gateway=False)).payload

    def make(base: dict[str, Any] = template) -> dict[str, Any]:
        return {**base, "id": str(new_snowflake())}

    results = []
    checks: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            replicas = Replicas(Path(tmp), fake, redis_url, prefix)
            for n in (1, 2):
                await replicas.start(n)
                try:
                    results.append(await drive(replicas, make, args, redis_url))
                    if n == 2:
                        checks = await replica_checks(replicas, fake, make)
                finally:
                    await replicas.stop()
    finally:
        await fake.stop()
        if redis_url is not None:
            import redis.asyncio as aioredis

            client = aioredis.from_url(redis_url)  # type: ignore[no-untyped-call]
            keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
            for i in range(0, len(keys), 1000):
                await client.delete(*keys[i : i + 1000])
            await client.aclose()

    cores = os.cpu_count() or 1
    dedupe = "Redis (idempotency plugin)" if redis_url else "per-replica memory"
    print()
    print(
        f"replicas: real `wisp serve-interactions` processes, de-duplication in {dedupe}; "
        f"{args.clients} client process(es), {args.concurrency} keep-alive connections "
        f"per replica, {args.requests} pre-signed requests per replica; {cores} cores, "
        f"load average {load_before:.2f} before the run"
    )
    print(
        f"  {'replicas':<8} {'req/s':>8} {'/replica':>9} {'p50 ms':>7} {'p99 ms':>7}"
        f"  {'server cores':>12} {'client':>6} {'redis':>6} {'others':>6}  statuses"
    )

    def others(r: dict[str, Any]) -> float:
        """Cores busy with anything but this benchmark's parties (other work, the kernel)."""
        ours = float(sum(r["server_cores"]) + r["client_cores"] + r["redis_cores"])
        return max(0.0, float(r["busy_cores"]) - ours)

    for r in results:
        lat = r["latencies"]
        servers = "+".join(f"{c:.2f}" for c in r["server_cores"])
        print(
            f"  {r['replicas']:<8} {r['rate']:>8,.0f} {r['rate'] / r['replicas']:>9,.0f} "
            f"{p(lat, 50):>7.1f} {p(lat, 99):>7.1f}  {servers:>12} {r['client_cores']:>6.2f} "
            f"{r['redis_cores']:>6.2f} {others(r):>6.2f}  {r['statuses']}"
        )
    one, two = results
    per_core = [r["rate"] / max(sum(r["server_cores"]), 1e-9) for r in results]
    cores_ratio = sum(two["server_cores"]) / max(sum(one["server_cores"]), 1e-9)
    print(
        f"  2 replicas / 1: {two['rate'] / one['rate']:.2f}x throughput (aim 1.8x); "
        f"the servers had {sum(two['server_cores']):.2f} cores against "
        f"{sum(one['server_cores']):.2f} ({cores_ratio:.2f}x); "
        f"per server core {per_core[0]:,.0f} vs {per_core[1]:,.0f} req/s "
        f"({per_core[1] / per_core[0]:.2f}x)"
    )
    if cores < 4:
        print(
            f"  note: on {cores} cores the client and Redis share the servers' cores, so 2 "
            "replicas cannot get 2 cores here; the per-core figure is what scales out"
        )
    slow = ", ".join(
        f"type {kind} after {seconds:.2f}s" for kind, seconds in checks.get("slow", [])
    )
    deferred = all(kind == 5 and seconds < 3 for kind, seconds in checks.get("slow", []))
    print(f"  bad signatures answered 401 across replicas: {checks.get('bad401')}/50")
    print(
        f"  3.5 s handler on each replica: {slow} "
        f"(deferred before Discord's 3 s: {'yes' if deferred else 'NO'})"
    )
    once = checks.get("duplicate") == [200, 409] and checks.get("again") == [409, 409]
    print(
        f"  one interaction id sent to both replicas at once: {checks.get('duplicate')}, "
        f"again to each afterwards: {checks.get('again')} (run once: {'yes' if once else 'NO'}"
        f"{'' if redis_url else ', expected: memory is per replica'})"
    )


async def main(args: argparse.Namespace) -> None:
    logger.remove()
    if not args.replicas_only:
        await one_process(args.quick)
    if not args.skip_replicas:
        await replicas_case(args)


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer requests, noisier")
    parser.add_argument("--replicas-only", action="store_true", help="only the replicas case")
    parser.add_argument("--skip-replicas", action="store_true", help="only the one-process cases")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("WISP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis shared by the replicas (default: WISP_TEST_REDIS_URL or local)",
    )
    parser.add_argument("--no-redis", action="store_true", help="de-duplicate per replica")
    parser.add_argument("--clients", type=int, default=1, help="load client processes")
    parser.add_argument("--concurrency", type=int, default=16, help="connections per replica")
    parser.add_argument("--requests", type=int, help="measured requests per replica")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(client_main(pickle.loads(Path(args.client).read_bytes())))
        return
    if args.requests is None:
        args.requests = 1500 if args.quick else 6000
    if args.clients < 1 or args.concurrency < 1 or args.requests < 10:
        parser.error("--clients and --concurrency must be 1 or more, --requests 10 or more")
    asyncio.run(main(args))


if __name__ == "__main__":
    run()
