"""The append combiner against a real store: appends to many streams share a transaction;
a stream whose version moved on fails alone; each idempotency key records its own events."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from psycopg_pool import AsyncConnectionPool

from infra.store import (
    NO_STREAM,
    AppendResult,
    ConcurrencyError,
    EventStore,
    Idempotency,
    StreamAppend,
)
from tests.integration.test_store import new_event
from write_api.combiner import AppendCombiner

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_concurrent_appends_share_transactions_and_a_conflict_fails_alone(
    shared_pool: AsyncConnectionPool,
) -> None:
    store = EventStore(shared_pool)
    combiner = AppendCombiner(store)
    streams = [f"test-{uuid.uuid4()}" for _ in range(30)]
    taken = streams[7]
    await store.append([StreamAppend(taken, NO_STREAM, [new_event()])])
    scope = str(uuid.uuid4())

    async def one(i: int, stream: str) -> AppendResult | BaseException:
        key = Idempotency(scope=scope, key=str(i), request_hash=b"h", response=b"{}")
        try:
            return await combiner.append(
                StreamAppend(stream, NO_STREAM, [new_event(i), new_event(i)]), [key]
            )
        except ConcurrencyError as e:
            return e

    results = await asyncio.gather(*(one(i, s) for i, s in enumerate(streams)))
    assert isinstance(results[7], ConcurrencyError) and results[7].stream_id == taken
    ok = [r for r in results if isinstance(r, AppendResult)]
    assert len(ok) == 29
    assert len({r.txid for r in ok}) < 29  # some shared a transaction
    for i, stream in enumerate(streams):
        if stream == taken:
            continue
        recorded = await store.read_stream(stream)
        result = results[i]
        assert isinstance(result, AppendResult)
        assert [e.position for e in recorded] == result.positions and result.versions == [1, 2]
        stored = await store.find_idempotent(scope, str(i))
        assert stored is not None and stored.positions == [result.positions[-1]]
    assert len(await store.read_stream(taken)) == 1
    assert await store.find_idempotent(scope, "7") is None
