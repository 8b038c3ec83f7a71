"""Reading the whole log in commit-safe order: as rows (EventStore.iter_all), and as the
contract's envelope JSON (what the audit export and the relay produce from them)."""

from __future__ import annotations

import time

from bench.append_batched import build_calls, load
from bench.context import BenchContext
from bench.result import Result, rate
from bench.timing import Measured, stopwatch
from events.envelope import ENCODER
from infra.store import EventStore

BATCH = 5000


async def fill(ctx: BenchContext, store: EventStore) -> None:
    """Top the log up to `read_all_min` events with batched appends."""
    async with store.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM events")
        row = await cur.fetchone()
    missing = ctx.sizes.read_all_min - (int(row[0]) if row else 0)
    calls = -(-missing // 1000)
    for start in range(0, calls, 50):  # in slices, to keep the prepared payloads small
        await load(store, build_calls(min(50, calls - start), 1, 1000))


async def settle(store: EventStore) -> None:
    """VACUUM (ANALYZE) the log, as autovacuum eventually would."""
    # A whole-log reader (rebuild, audit export) meets a log that has settled: hint bits
    # set and the visibility map current, as autovacuum leaves it. Without this the figure
    # depends on whether autovacuum happened to pass before the clock started.
    async with store.pool.connection() as conn:
        await conn.execute("VACUUM (ANALYZE) events")


async def _read(store: EventStore) -> tuple[int, Measured]:
    await store.read_all(limit=BATCH)  # warm-up: the prepared statement, the first pages
    n = 0
    with stopwatch() as m:
        async for events in store.iter_all(batch=BATCH):
            n += len(events)
    return n, m


async def read_all(ctx: BenchContext) -> Result:
    """Events/s of EventStore.iter_all(batch=5000) over the whole, settled log; the first
    read of freshly written rows (which sets their hint bits) is kept as `fresh_log_per_s`."""
    async with ctx.pool(2, "bench-read") as pool:
        store = EventStore(pool, notify=False)
        await fill(ctx, store)
        fresh_n, fresh = await _read(store)
        await settle(store)
        n, m = await _read(store)
    return rate("read_all", n, m, "events/s", batch=BATCH,
                fresh_log_per_s=round(fresh_n / fresh.seconds))  # fmt: skip


async def read_all_envelope(ctx: BenchContext) -> Result:
    """Events/s of iter_all plus RecordedEvent.envelope() and msgspec JSON encoding."""
    async with ctx.pool(2, "bench-read") as pool:
        store = EventStore(pool, notify=False)
        await fill(ctx, store)
        await settle(store)
        await store.read_all(limit=BATCH)
        n, size, encoding = 0, 0, 0.0
        with stopwatch() as m:
            async for events in store.iter_all(batch=BATCH):
                t = time.perf_counter()
                for e in events:
                    size += len(ENCODER.encode(e.envelope()))
                encoding += time.perf_counter() - t
                n += len(events)
    return rate(
        "read_all_envelope", n, m, "events/s", batch=BATCH,
        envelope_only_per_s=round(n / encoding) if encoding else None,
        envelope_share=round(encoding / m.seconds, 3), mean_json_bytes=round(size / max(n, 1)),
    )  # fmt: skip
