"""Policy decisions as rules pile up: warm-cache decision time stays flat.

For 10, 1,000 and 100,000 rules in one guild (spread over capabilities,
users, roles and channels, as a busy server's would be) this prints the time
of one decision with a warm cache (what the policy middleware asks: the
winning rule, not the full explain list), the ratio to the 10-rule case, and
the cold-cache load time of a guild with 10,000 rules.  SQLite, in a
temporary project; no assertions.

Run::

    python benchmarks/policy.py
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from typing import Any

from loguru import logger
from sqlalchemy import insert

import wisp
from wisp.plugins.policy.engine import Actor
from wisp.plugins.policy.models import PolicyRule

GUILD = 1
SCOPES = ("user", "role", "channel", "guild")


def rows(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        scope = SCOPES[i % 4]
        out.append(
            {
                "guild_id": GUILD,
                "capability": f"area{i % 50}.action{i % 7}",
                "action": "deny" if i % 3 else "allow",
                "scope": scope,
                "scope_id": GUILD if scope == "guild" else 1000 + i,
                "priority": i % 5,
            }
        )
    return out


async def measure(n: int, loops: int = 20_000) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as root:
        app = wisp.Wisp(rootdir=root, autoload=False, plugins=["storage", "policy"], env={})
        async with app:
            db = app.services.get("db")
            async with db.transaction() as s:
                for chunk in range(0, n, 5000):
                    await s.execute(insert(PolicyRule), rows(n)[chunk : chunk + 5000])
            service = app.services.get("policy")
            actor = Actor(user_id=1003, guild_id=GUILD, channel_id=1002, roles={1001: 3})
            start = time.perf_counter()
            await service.index(GUILD)
            load = time.perf_counter() - start
            for _ in range(1000):
                await service.explain("area3.action3", actor, every_rule=False)
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter_ns()
                for _ in range(loops):
                    await service.explain("area3.action3", actor, every_rule=False)
                best = min(best, (time.perf_counter_ns() - start) / loops)
    return best, load


async def main() -> None:
    results = {n: await measure(n) for n in (10, 1_000, 100_000)}
    base = results[10][0]
    print("warm-cache decision time (one guild, rules in the database)")
    for n, (ns, _) in results.items():
        print(f"  {n:>7,} rules: {ns / 1000:7.2f} us/decision  ({ns / base:.2f}x the 10-rule case)")
    _, load = await measure(10_000, loops=10)
    print(f"cold-cache load of a guild with 10,000 rules: {load * 1000:.1f} ms")


if __name__ == "__main__":
    logger.remove()
    asyncio.run(main())
