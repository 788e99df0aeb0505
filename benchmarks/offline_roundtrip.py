"""Slash commands per second, end to end, through the offline Discord driver.

Each round trip: the fake Discord sends INTERACTION_CREATE over its gateway
websocket, the real discord.py client parses it, Wisp runs the command through
its compiled pipeline, and discord.py posts the interaction callback back over
HTTP to the fake.  The script reports commands per second and how the time per
command splits between Wisp (``app.call``: context, pipeline, handler, error
boundary) and everything else (discord.py, aiohttp, the fake, the event loop).

Run::

    python benchmarks/offline_roundtrip.py            # 500 commands
    python benchmarks/offline_roundtrip.py -n 2000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from typing import Any

import wisp
from wisp.plugins.discord.offline import OfflineDriver


@wisp.command(description="Add two numbers.")
async def add(ctx: wisp.WispContext, a: int, b: int = 1) -> str:
    return str(a + b)


class Bench:
    @wisp.hookimpl
    def wisp_commands(self) -> list[wisp.Command]:
        return [add]


async def main(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as root:
        app = wisp.Wisp(rootdir=root, autoload=False, plugins=["discord", "accesslog"], env={})
        app.register(Bench(), "bench")
        inside = 0
        real_call = app.call

        async def timed_call(*args: Any, **kwargs: Any) -> wisp.Outcome:
            nonlocal inside
            start = time.perf_counter_ns()
            try:
                return await real_call(*args, **kwargs)
            finally:
                inside += time.perf_counter_ns() - start

        app.call = timed_call  # type: ignore[method-assign]
        async with OfflineDriver(app) as bot:
            for _ in range(50):  # warm up
                await bot.slash("add", {"a": 1})
            inside = 0
            start = time.perf_counter_ns()
            for i in range(n):
                answer = await bot.slash("add", {"a": i, "b": 2})
                if answer.replies != [str(i + 2)]:
                    raise SystemExit(f"wrong answer: {answer}")
            total = time.perf_counter_ns() - start
    return {
        "commands": n,
        "per_second": n / (total / 1e9),
        "us_per_command": total / n / 1000,
        "wisp_us_per_command": inside / n / 1000,
        "wisp_share": inside / total,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-n", type=int, default=500, help="commands to send")
    from loguru import logger

    logger.remove()  # measure the work, not a terminal's speed at printing log lines
    result = asyncio.run(main(parser.parse_args().n))
    print(f"{result['commands']} slash commands end to end through the offline driver")
    print(f"  {result['per_second']:.0f} commands/s, {result['us_per_command']:.0f} us each")
    print(
        f"  in Wisp (app.call): {result['wisp_us_per_command']:.1f} us "
        f"= {result['wisp_share']:.1%} of each round trip; the rest is discord.py, "
        "aiohttp, the fake Discord and the event loop"
    )
