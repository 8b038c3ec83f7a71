"""The closer (`hubbub scheduler`): closes every auction at its end, exactly once.

It asks the auctions read model which open auctions are due, then for each one loads the
auction's stream and lets the decider close it (Close at "now"). Exactly once needs no
lock: two closers that race both decide on version N and append at N; the store takes one
and the other meets a version conflict, reloads, finds the auction closed and appends
nothing. A read model row that lags behind only makes the closer look too early (ends_at
only ever moves later), and the decider does nothing until the real end. After a
restart, every overdue auction is simply due.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime

import psycopg
import structlog
from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from commands import auction as au
from events.auction import auction_stream
from infra.db import make_pool
from infra.http import Problem
from infra.metrics import serve_metrics
from infra.relay import stop_on_signals
from infra.settings import Settings
from infra.store import EventStore, StoreError, StreamAppend
from projections.registry import ensure_all
from write_api.handling import Decision, execute, load, metadata, new_events

log = structlog.get_logger("closer")

CLOSED = Counter("hubbub_scheduler_closed_total", "Auctions this scheduler closed")
ROUNDS = Counter("hubbub_scheduler_rounds_total", "Closer rounds", ["outcome"])

DUE_SQL = (
    "SELECT auction_id FROM rm_auctions.auctions WHERE status = 'open' AND ends_at <= %s"
    " ORDER BY ends_at LIMIT %s"
)
RECHECK_S = 2.0  # how long a closed auction's lagging row is not looked at again


class Closer:
    """Polls for due auctions and closes them."""

    def __init__(
        self, pool: AsyncConnectionPool, *, interval: float = 0.2, batch: int = 200
    ) -> None:
        self.pool = pool
        self.store = EventStore(pool)
        self.interval = interval
        self.batch = batch
        self._done: dict[str, float] = {}  # auction id -> when this closer settled it

    async def due(self, now: datetime) -> list[str]:
        """Open auctions whose end has passed, soonest first (as the read model knows them)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(DUE_SQL, (now, self.batch), prepare=True)
            rows = await cur.fetchall()
        return [str(row[0]) for row in rows]

    async def close(self, auction_id: str, now: datetime) -> bool:
        """Close one auction if its end has passed; whether this call closed it."""
        stream = auction_stream(auction_id)
        closed = False

        async def attempt() -> Decision:
            nonlocal closed
            state, version = await load(self.store, stream, au.INITIAL, au.evolve)
            events = au.decide(au.Close(at=max(now, datetime.now(UTC))), state)
            closed = bool(events)
            meta = metadata("scheduler", str(uuid.uuid4()), None, None)
            return Decision([StreamAppend(stream, version, new_events(events, meta))] if events else [],
                            {"auction_id": auction_id})  # fmt: skip

        await execute(self.store, attempt, None)
        return closed

    async def tick(self) -> int:
        """One round: close what is due; how many this round closed."""
        now = datetime.now(UTC)
        clock = time.monotonic()
        self._done = {a: t for a, t in self._done.items() if clock - t < RECHECK_S}
        closed = 0
        for auction_id in await self.due(now):
            if auction_id in self._done:
                continue
            if await self.close(auction_id, now):
                closed += 1
                CLOSED.inc()
                log.info("auction closed", auction_id=auction_id)
            self._done[auction_id] = clock
        return closed

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop`; a failing round is logged and retried, never fatal."""
        while not stop.is_set():
            try:
                await self.tick()
                ROUNDS.labels("ok").inc()
            except (psycopg.Error, StoreError, Problem) as e:
                ROUNDS.labels("failed").inc()
                log.warning("closer round failed", error=str(e))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)


async def main(settings: Settings) -> None:
    """`hubbub scheduler`: close auctions at their end until SIGINT/SIGTERM."""
    assert settings.database_url, "the CLI resolves the URLs"
    stop = asyncio.Event()
    stop_on_signals(stop)
    serve_metrics(settings, "scheduler")
    pool = make_pool(settings.database_url, min_size=1, max_size=4, name="hubbub-scheduler")
    await pool.open()
    try:
        await ensure_all(pool)  # the read model it polls, if the projector has not made it yet
        log.info("scheduler started")
        await Closer(pool).run(stop)
    finally:
        await pool.close()
