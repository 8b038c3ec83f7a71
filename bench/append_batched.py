"""EventStore.append with many events per call: 1,000 to one new stream, or 500 spread over
five new streams (100 each)."""

from __future__ import annotations

import asyncio
from typing import Final

from bench.context import BenchContext
from bench.payloads import channel_stream, messages
from bench.result import Result, rate
from bench.timing import Measured, stopwatch
from infra.store import NO_STREAM, EventStore, StreamAppend

# Calls in flight at once: the client encodes some while PostgreSQL inserts another's
# batch, and both cores stay busy. Three, measured on session 7's machine (1,000 events a
# call, alternating runs, events/s): 2 writers 50.8k, 63.4k, 83.8k, 79.7k; 3 writers
# 89.8k, 99.8k; 4 writers 67.1k, 94.8k, 76.3k, 95.7k. (Two had been chosen from 1, 2 and
# 4 writers measured at 12.7k, 16.2k and 17.0k on a much earlier store.)
WRITERS: Final = 3
WARMUP_CALLS: Final = 2


def build_calls(calls: int, streams: int, per_stream: int) -> list[list[StreamAppend]]:
    """`calls` appends, each of `streams` new streams with `per_stream` events."""
    return [
        [
            StreamAppend(stream, NO_STREAM, messages(stream, per_stream))
            for stream in (channel_stream() for _ in range(streams))
        ]
        for _ in range(calls)
    ]


async def load(
    store: EventStore, calls: list[list[StreamAppend]], writers: int = WRITERS
) -> Measured:
    """Append every call in `calls` with `writers` concurrent writers, measured."""
    queue = iter(calls)

    async def writer() -> None:
        for call in queue:  # one shared iterator: each writer takes the next call when free
            await store.append(call)

    with stopwatch() as m:
        await asyncio.gather(*(writer() for _ in range(writers)))
    return m


async def _run(ctx: BenchContext, name: str, streams: int, per_stream: int) -> Result:
    per_call = streams * per_stream
    calls = max(1, ctx.sizes.batched_events // per_call)
    warm = build_calls(WARMUP_CALLS * WRITERS, streams, per_stream)
    timed = build_calls(calls, streams, per_stream)
    async with ctx.pool(WRITERS, f"bench-{name}") as pool:
        store = EventStore(pool, notify=False)  # one hint per call would not show anyway
        await load(store, warm)
        measured = await load(store, timed)
    n = calls * per_call
    return rate(name, n, measured, "events/s", writers=WRITERS, events_per_call=per_call,
                streams_per_call=streams, calls=calls)  # fmt: skip


async def one_stream(ctx: BenchContext) -> Result:
    """Events/s of 1,000-event appends to one new stream each."""
    return await _run(ctx, "append_batched", 1, 1000)


async def five_streams(ctx: BenchContext) -> Result:
    """Events/s of 500-event appends spread over five new streams each."""
    return await _run(ctx, "append_batched_5x100", 5, 100)
