"""The ceiling: single-row autocommit INSERTs into a plain table holding what any append
must store (an identity key, the unique event id, the stream id and the data), through the
same kind of pool and checkout as the store, with none of the store's SQL or columns: no
head lookup, no version, no hash chain, no metadata, no commit-order key. Its rows are
about half as wide as an event's, which is part of what the ratio measures."""

from __future__ import annotations

from typing import Final

from bench.context import BenchContext
from bench.payloads import channel_stream, message
from bench.result import Result, rate
from bench.timing import warm_then_time

_DDL: Final = """
CREATE TABLE IF NOT EXISTS raw_events (
    position  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id  uuid NOT NULL UNIQUE,
    stream_id text NOT NULL,
    data      json NOT NULL
)
"""
_INSERT: Final = "INSERT INTO raw_events (event_id, stream_id, data) VALUES (%s, %s, %s::json)"


async def run(ctx: BenchContext) -> Result:
    """Inserts/s of `writers` concurrent single-row autocommit INSERTs."""
    sizes = ctx.sizes
    per_writer = sizes.raw_insert // sizes.writers
    total = per_writer + sizes.warmup
    # The same payloads as append_single, decoded to text as the store sends them.
    rows = [
        [(e.event_id, stream, e.data.decode()) for e in (message(stream) for _ in range(total))]
        for stream in (channel_stream() for _ in range(sizes.writers))
    ]
    cursor = [0] * sizes.writers
    async with ctx.pool(sizes.writers, "bench-raw") as pool:
        async with pool.connection() as conn:
            await conn.execute(_DDL)

        async def insert(writer: int) -> None:
            row = rows[writer][cursor[writer]]
            cursor[writer] += 1
            # The store's own checkout (getconn/putconn, not connection()'s wrapper): the
            # ceiling must not be slower for a reason the store avoids.
            conn = await pool.getconn()
            try:
                await conn.execute(_INSERT, row, prepare=True)
            finally:
                await pool.putconn(conn)

        measured = await warm_then_time(sizes.writers, sizes.warmup, per_writer, insert)
    n = per_writer * sizes.writers
    return rate("raw_insert", n, measured, "inserts/s", writers=sizes.writers)
