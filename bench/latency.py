"""Commit-to-read-model latency: from an append's commit until the projection that reads
its event has applied it (relay -> NATS -> projector -> checkpoint).

A Relay and a ProjectionRunner run as tasks in this process, on a scratch database of
their own (so they need not first publish and project what the other workloads left in
the log), against this run's JetStream stream. One UserRegistered event is appended every
1 ms, open loop (each append starts at its scheduled time whatever the previous ones are
doing, so a slow append does not lower the rate). An event is visible once a
`hubbub_projection` notification for the users projection names a checkpoint at or past
its position; its latency is that notification's arrival minus the append's return.

Registered as optional: while the pieces it needs cannot be imported, the run reports
this workload as skipped, "not yet available".
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import statistics
import time
import uuid
from datetime import UTC, datetime

import psycopg

from bench.context import QUICK, BenchContext
from bench.processes import CpuWatch, start_part, stop_parts
from bench.result import Result
from bench.timing import open_loop, quantile
from events.envelope import Position
from events.registry import encode
from events.user import UserRegistered, user_stream
from infra.db import make_pool, migrate
from infra.store import NO_STREAM, PROJECTION_CHANNEL, EventStore, NewEvent, StreamAppend
from projections.runtime import notified

RATE = 1000.0  # events/s
WARMUP_S = 1.0
SECONDS_FULL = 10.0
SECONDS_QUICK = 3.0
PROJECTION = "users"
TARGET_P50_MS = 5.0
TARGET_P99_MS = 25.0
DRAIN_TIMEOUT_S = 10.0


def _registration() -> StreamAppend:
    user_id = str(uuid.uuid4())
    type_name, version, data = encode(
        UserRegistered(user_id=user_id, username=f"u{user_id.replace('-', '')[:20]}",
                       display_name="Bench User", password_hash="-",
                       registered_at=datetime.now(UTC))
    )  # fmt: skip
    event = NewEvent(event_id=uuid.uuid4(), type=type_name, data=data,
                     metadata=b'{"correlation_id":"bench"}', schema_version=version)  # fmt: skip
    return StreamAppend(user_stream(user_id), NO_STREAM, [event])


async def _listen(conn: psycopg.AsyncConnection[object], arrivals: list[tuple[float, Position]]) -> None:  # fmt: skip
    """Record (arrival, checkpoint) for every notification of the users projection."""
    async for note in conn.notifies():
        now = time.perf_counter()
        names, token = notified(note.payload)
        if PROJECTION in names:
            arrivals.append((now, Position.parse(token)))


async def _write(store: EventStore, seconds: float) -> list[tuple[float, Position, float]]:
    """Append one event every 1/RATE s for `seconds`, open loop: (scheduled, position,
    commit time) for each, in schedule order."""

    async def one(_: int, scheduled: float) -> tuple[float, Position, float]:
        result = await store.append([_registration()])
        return scheduled, result.position, time.perf_counter()

    return sorted(await open_loop(one, time.perf_counter(), int(seconds * RATE), RATE, "appends"))


async def _wait_visible(arrivals: list[tuple[float, Position]], last: Position) -> None:
    deadline = time.perf_counter() + DRAIN_TIMEOUT_S
    while not arrivals or arrivals[-1][1] < last:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the read model did not reach {last.token()} within "
                               f"{DRAIN_TIMEOUT_S:.0f} s of the last append")  # fmt: skip
        await asyncio.sleep(0.01)


async def _measure(ctx: BenchContext, url: str, seconds: float) -> Result:
    settings = ctx.nats.settings(url)
    writer_pool = make_pool(url, min_size=8, max_size=8, name="bench-latency")
    listener = await psycopg.AsyncConnection.connect(url, autocommit=True)
    tasks: list[asyncio.Task[None]] = []
    parts = [start_part("relay", settings), start_part("projector", settings)]
    try:
        await writer_pool.open(wait=True, timeout=60)
        await listener.execute(f"LISTEN {PROJECTION_CHANNEL}")
        arrivals: list[tuple[float, Position]] = []
        tasks.append(asyncio.create_task(_listen(listener, arrivals)))
        store = EventStore(writer_pool)
        try:
            # The warm-up also waits out the processes' start: its events must come through.
            warm = await _write(store, WARMUP_S)
            await _wait_visible(arrivals, max(p for _, p, _ in warm))
            watch = CpuWatch({"relay": parts[0].pid, "projector": parts[1].pid})
            watch.mark()
            timed = await _write(store, seconds)
            await _wait_visible(arrivals, max(p for _, p, _ in timed))
            cpu = watch.since()
        finally:
            if store.notifier is not None:
                await store.notifier.close()
    finally:
        stop_parts(parts)
        for task in tasks:  # the listener never ends by itself
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await listener.close()
        await writer_pool.close()

    # Checkpoints only move forward, so arrivals are in position order as well as time.
    positions = [p for _, p in arrivals]
    latencies: list[float] = []
    for _, position, committed in timed:
        i = bisect.bisect_left(positions, position)
        latencies.append((arrivals[i][0] - committed) * 1000.0)
    latencies.sort()
    span = timed[-1][2] - timed[0][2]
    p50, p99 = statistics.median(latencies), quantile(latencies, 0.99)
    return Result(
        name="commit_to_read_model_latency", value=p50, unit="ms", n=len(latencies),
        seconds=span,
        extra={
            "p50_ms": round(p50, 2), "p90_ms": round(quantile(latencies, 0.90), 2),
            "p99_ms": round(p99, 2), "max_ms": round(latencies[-1], 2),
            "rate_per_s": round((len(timed) - 1) / span, 1),
            "target": f"p50 <= {TARGET_P50_MS:g} ms: {'pass' if p50 <= TARGET_P50_MS else 'FAIL'}, "
                      f"p99 <= {TARGET_P99_MS:g} ms: {'pass' if p99 <= TARGET_P99_MS else 'FAIL'}",
            "notifications": len(arrivals),
            "cpu_us_per_event": ", ".join(f"{k} {round(c / len(timed) * 1e6)}"
                                          for k, c in cpu.items()),
        },
    )  # fmt: skip


async def run(ctx: BenchContext) -> Result:
    """p50 milliseconds from commit to read model, with p90/p99/max beside it."""
    seconds = SECONDS_QUICK if ctx.sizes is QUICK else SECONDS_FULL
    with ctx.scratch_database("latency") as url:
        await asyncio.to_thread(migrate, url)
        return await _measure(ctx, url, seconds)
