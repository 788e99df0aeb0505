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
Discord's deadline.  Replicas scale across processes; this script runs one
process and does not measure "two replicas vs one".

Run::

    python benchmarks/interactions.py            # ~20 s
    python benchmarks/interactions.py --quick    # a few seconds, noisier
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
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


async def main(quick: bool) -> None:
    logger.remove()
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


def run(main_: Callable[[bool], Awaitable[None]]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer requests, noisier")
    asyncio.run(main_(parser.parse_args().quick))


if __name__ == "__main__":
    run(main)
