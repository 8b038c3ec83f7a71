"""A reader tailing the log never skips an event that a concurrent writer commits late."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict

import pytest
from psycopg_pool import AsyncConnectionPool

from events.envelope import ORIGIN, Position
from infra.store import ANY, NO_STREAM, EventStore, NewEvent, StreamAppend

pytestmark = pytest.mark.asyncio(loop_scope="session")

WRITERS = 16
ROUNDS = 8
PER_WRITER = 6


def new_event(n: int) -> NewEvent:
    return NewEvent(
        event_id=uuid.uuid4(), type="Tick", data=f'{{"n": {n}}}'.encode(), metadata=b"{}"
    )


async def test_concurrent_late_commits_are_seen_exactly_once_in_stream_order(
    pool: AsyncConnectionPool,
) -> None:
    store = EventStore(pool, notify=False)
    rng = random.Random(7)
    committed: dict[uuid.UUID, tuple[str, int]] = {}
    seen: list[tuple[uuid.UUID, str, int, Position]] = []
    writing = True

    async def writer(w: int, rnd: int) -> None:
        stream = f"gap-{rnd}-{w}"
        for i in range(PER_WRITER):
            batch = [new_event(i)] if rng.random() < 0.6 else [new_event(i), new_event(i)]
            async with pool.connection() as conn, conn.transaction():
                if w == 0:
                    # A transaction id taken well before its positions: the others' appends
                    # meanwhile get later ids but earlier positions, so the log's order
                    # (txid, position) is surely not the positions' order (checked below).
                    await conn.execute("SELECT pg_current_xact_id()")
                    await asyncio.sleep(0.02)
                # Take the identity values now, commit later: exactly what makes positions
                # commit out of order.
                result = await store.append(
                    [StreamAppend(stream, NO_STREAM if i == 0 else ANY, batch)], conn=conn
                )
                await asyncio.sleep(rng.random() * 0.03)
            for e, v in zip(batch, result.versions, strict=True):
                committed[e.event_id] = (stream, v)

    async def reader() -> None:
        after = ORIGIN
        while True:
            still_writing = writing
            events = await store.read_all(after, limit=7)  # small pages: many boundaries
            for e in events:
                seen.append((e.event_id, e.stream_id, e.stream_version, e.at))
            if events:
                after = events[-1].at
            elif not still_writing:
                return
            else:
                await asyncio.sleep(0.001)

    tail = asyncio.create_task(reader())
    for rnd in range(ROUNDS):
        await asyncio.gather(*(writer(w, rnd) for w in range(WRITERS)))
    writing = False
    await tail

    ids = [s[0] for s in seen]
    assert len(ids) == len(set(ids)), "an event was read twice"
    assert set(ids) == set(committed), "an event was skipped"
    positions = [s[3] for s in seen]
    assert positions == sorted(positions)
    versions: dict[str, list[int]] = defaultdict(list)
    for _, stream, version, _ in seen:
        versions[stream].append(version)
    for stream, vs in versions.items():
        assert vs == list(range(1, len(vs) + 1)), f"{stream} out of order"
    assert len(ids) >= WRITERS * ROUNDS * PER_WRITER
    # The race was real: some positions were taken in another order than the log's. Left
    # to chance alone, a round on a busy two-core machine sometimes made none.
    raw_order = sorted(seen, key=lambda s: s[3].position)
    assert [s[3] for s in raw_order] != positions or ROUNDS == 0
