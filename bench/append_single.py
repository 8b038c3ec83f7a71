"""EventStore.append with one event per call from concurrent writers: half open a new
stream (NO_STREAM), half extend the writer's own stream at its exact version."""

from __future__ import annotations

from bench.context import BenchContext
from bench.payloads import channel_stream, message
from bench.result import Result, rate
from bench.timing import warm_then_time
from infra.store import NO_STREAM, EventStore, NewEvent, StreamAppend


async def run(ctx: BenchContext) -> Result:
    """Events/s of single-event appends by `writers` concurrent writers."""
    sizes = ctx.sizes
    per_writer = sizes.append_single // sizes.writers
    total = per_writer + sizes.warmup
    own = [channel_stream() for _ in range(sizes.writers)]
    # Even calls open a new stream, odd ones extend the writer's own stream.
    plans: list[list[tuple[str | None, NewEvent]]] = []
    for stream in own:
        plan: list[tuple[str | None, NewEvent]] = []
        for i in range(total):
            fresh = channel_stream() if i % 2 == 0 else None
            plan.append((fresh, message(fresh or stream)))
        plans.append(plan)
    cursor = [0] * sizes.writers
    versions = [0] * sizes.writers
    async with ctx.pool(sizes.writers, "bench-append") as pool:
        # As a write API would build it: with the after-commit NOTIFY hint for the relay.
        store = EventStore(pool)

        async def append(writer: int) -> None:
            fresh, event = plans[writer][cursor[writer]]
            cursor[writer] += 1
            if fresh is not None:
                await store.append([StreamAppend(fresh, NO_STREAM, [event])])
            else:
                await store.append([StreamAppend(own[writer], versions[writer], [event])])
                versions[writer] += 1

        try:
            measured = await warm_then_time(sizes.writers, sizes.warmup, per_writer, append)
        finally:
            if store.notifier is not None:
                await store.notifier.close()
    n = per_writer * sizes.writers
    return rate("append_single", n, measured, "events/s", writers=sizes.writers, notify=True)
