"""Exactly one relay publishes at a time; another takes over when it goes."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from infra.db import make_pool
from infra.relay import Relay, connect_jetstream
from infra.settings import Settings
from infra.store import NO_STREAM, EventStore, NewEvent, StreamAppend

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_one_leader_and_a_takeover(settings: Settings) -> None:
    assert settings.database_url
    stops = [asyncio.Event(), asyncio.Event()]
    nc = await connect_jetstream(settings, stops[0])
    assert nc is not None
    pools = [make_pool(settings.database_url, min_size=1, max_size=2) for _ in range(2)]
    for pool in pools:
        await pool.open()
    relays = [Relay(settings, pool, nc.jetstream()) for pool in pools]
    tasks = [asyncio.create_task(r.run(stop)) for r, stop in zip(relays, stops, strict=True)]
    try:
        for _ in range(500):  # either may win the lock
            if any(r.leading.is_set() for r in relays):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.5)  # the other has tried (and keeps trying) for the lock
        assert sorted(r.leading.is_set() for r in relays) == [False, True]
        leader = 0 if relays[0].leading.is_set() else 1
        follower = 1 - leader

        store = EventStore(pools[0])
        stream = f"lead-{uuid.uuid4()}"
        await store.append(
            [
                StreamAppend(
                    stream,
                    NO_STREAM,
                    [NewEvent(event_id=uuid.uuid4(), type="T", data=b"{}", metadata=b"{}")],
                )
            ]
        )
        stops[leader].set()  # the leader goes away
        await asyncio.wait_for(tasks[leader], 10)
        await asyncio.wait_for(relays[follower].leading.wait(), 10)
        head = await store.head()
        for _ in range(200):
            checkpoint = await relays[follower].load_checkpoint()
            if checkpoint.at >= head:
                break
            await asyncio.sleep(0.02)
        assert checkpoint.at >= head and checkpoint.event_count >= 1
    finally:
        for stop in stops:
            stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        for pool in pools:
            await pool.close()
        await nc.close()
