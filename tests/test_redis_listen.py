"""RedisService.listen: a subscription that outlives dropped connections and bad handlers."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import wisp

pytestmark = pytest.mark.needs_plugin("redis")


async def _until(check, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_a_killed_connection_is_subscribed_again_and_reported_as_a_gap(
    start_redis_service, log_lines
) -> None:
    channel = f"wisp:test:listen:{uuid.uuid4().hex[:8]}"
    service = await start_redis_service()
    assert service.client is not None
    got: list[bytes] = []
    gaps: list[str] = []
    subscribed = asyncio.Event()
    before = {c["id"] for c in await service.client.client_list(_type="pubsub")}
    task = asyncio.create_task(
        service.listen(
            channel, got.append, on_gap=lambda: gaps.append("gap"), subscribed=subscribed
        )
    )
    try:
        await asyncio.wait_for(subscribed.wait(), 10)
        await service.client.publish(channel, b"one")
        await _until(lambda: got == [b"one"])
        ours = [
            c["id"]
            for c in await service.client.client_list(_type="pubsub")
            if c["id"] not in before
        ]
        assert ours
        for client_id in ours:
            await service.client.client_kill_filter(_id=client_id)
        await _until(lambda: gaps == ["gap"])
        await service.client.publish(channel, b"two")
        await _until(lambda: got == [b"one", b"two"])
    finally:
        await wisp.cancel_and_wait(task)
    assert task.cancelled()


async def test_a_handler_that_raises_does_not_end_the_subscription(
    start_redis_service, log_lines
) -> None:
    channel = f"wisp:test:listen:{uuid.uuid4().hex[:8]}"
    service = await start_redis_service()
    assert service.client is not None
    got: list[bytes] = []

    def handler(data: bytes) -> None:
        if data == b"bad":
            raise ValueError("cannot read it")
        got.append(data)

    subscribed = asyncio.Event()
    task = asyncio.create_task(service.listen(channel, handler, subscribed=subscribed))
    try:
        await asyncio.wait_for(subscribed.wait(), 10)
        await service.client.publish(channel, b"bad")
        await service.client.publish(channel, b"good")
        await _until(lambda: got == [b"good"])
    finally:
        await wisp.cancel_and_wait(task)
    messages = [r["message"] for r in log_lines]
    assert f"redis: handling a message for {channel} failed" in messages
    assert not any("lost the subscription" in m for m in messages)
