"""Operating projections: status (position, head, lag) and blue-green rebuilds.

A rebuild reads the store directly in large batches into a fresh schema
(`rm_<name>__next`) while the live one keeps serving; it resumes from that schema's own
checkpoint after a crash. When it has caught up it swaps the schemas by renaming them in
one transaction, after applying the last few events inside that same transaction, so
readers go from the complete old read model to the complete new one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from rich.progress import Progress

from events.envelope import ORIGIN, Position
from infra.db import make_pool
from infra.settings import Settings
from infra.store import COMMIT_SAFE, PROJECTION_CHANNEL, EventStore
from projections.registry import ALL, by_name
from projections.runtime import (
    Projection,
    apply_batch,
    create_schema,
    live_schema,
    next_schema,
    old_schema,
    read_checkpoint,
    schema_version,
)

REBUILD_BATCH = 10_000


class RebuildBusy(RuntimeError):
    """Another rebuild of the same projection is running."""


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    position: str
    head_position: str
    lag_events: int
    lag_seconds: float
    status: str


@dataclass(frozen=True)
class RebuildResult:
    name: str
    events: int
    seconds: float
    position: str
    resumed: bool

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def _schema_exists(conn: psycopg.AsyncConnection[Any], schema: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    return await cur.fetchone() is not None


async def _lag(conn: psycopg.AsyncConnection[Any], after: Position) -> tuple[int, float]:
    cur = await conn.execute(
        f"SELECT count(*), min(recorded_at) FROM (SELECT recorded_at FROM events"
        f" WHERE (txid, position) > (%s::xid8, %s) AND {COMMIT_SAFE} LIMIT 10000001) AS behind",
        (str(after.txid), after.position),
    )
    row = await cur.fetchone()
    assert row is not None
    count, oldest = row
    seconds = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
    return int(count), max(0.0, seconds)


async def projection_status(pool: AsyncConnectionPool, store: EventStore) -> list[ProjectionStatus]:
    """Where every projection is against the head of the log."""
    head = await store.head()
    out = []
    async with pool.connection() as conn:
        for projection in ALL:
            schema = live_schema(projection.name)
            if not await _schema_exists(conn, schema):
                out.append(
                    ProjectionStatus(
                        projection.name, ORIGIN.token(), head.token(), 0, 0.0, "missing"
                    )
                )
                continue
            position = await read_checkpoint(conn, schema)
            lag_events, lag_seconds = await _lag(conn, position)
            if await _schema_exists(conn, next_schema(projection.name)):
                state = "rebuilding"
            elif await schema_version(conn, schema) != projection.version:
                state = "stale"
            else:
                state = "live" if lag_events == 0 else "catching_up"
            out.append(
                ProjectionStatus(
                    projection.name, position.token(), head.token(), lag_events, lag_seconds, state
                )
            )
    return out


@contextlib.asynccontextmanager
async def _pool(settings: Settings) -> AsyncIterator[AsyncConnectionPool]:
    assert settings.database_url, "the CLI resolves the URLs"
    pool = make_pool(settings.database_url, min_size=1, max_size=4, name="hubbub-ops")
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close()


async def status(settings: Settings) -> list[ProjectionStatus]:
    """`hubbub projections status`."""
    async with _pool(settings) as pool:
        return await projection_status(pool, EventStore(pool, notify=False))


async def rebuild(settings: Settings, name: str, progress: Progress | None = None) -> RebuildResult:
    """`hubbub projections rebuild NAME`; KeyError for an unknown projection."""
    projection = by_name(name)
    async with _pool(settings) as pool:
        return await rebuild_projection(pool, projection, progress)


async def rebuild_projection(
    pool: AsyncConnectionPool,
    projection: Projection,
    progress: Progress | None = None,
    *,
    batch: int = REBUILD_BATCH,
    stop_after: int | None = None,
) -> RebuildResult:
    """Build `projection` afresh beside the live one and swap it in.

    `stop_after` (events) stops early without swapping, as a crash would: the next call
    resumes from there.
    """
    store = EventStore(pool, notify=False)
    nxt, live, old = (
        next_schema(projection.name),
        live_schema(projection.name),
        old_schema(projection.name),
    )
    started = time.perf_counter()
    applied = 0
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 7233))",
            (f"rebuild:{projection.name}",),
        )
        row = await cur.fetchone()
        if not (row and row[0]):
            raise RebuildBusy(f"a rebuild of {projection.name} is already running")
        try:
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(old))
            )
            resumed = await _schema_exists(conn, nxt)
            if not resumed:
                async with conn.transaction():
                    await create_schema(conn, projection, nxt)
            checkpoint = await read_checkpoint(conn, nxt)
            total, _ = await _lag(conn, checkpoint)
            task = (
                progress.add_task(f"rebuilding {projection.name}", total=total)
                if progress
                else None
            )
            while stop_after is None or applied < stop_after:
                events = await store.read_all(checkpoint, limit=batch)
                if not events:
                    break
                await apply_batch(
                    conn, projection, nxt, checkpoint, events, events[-1].at, notify=False
                )
                checkpoint = events[-1].at
                applied += len(events)
                if progress is not None and task is not None:
                    progress.update(task, advance=len(events))
            if stop_after is not None and applied >= stop_after:
                return RebuildResult(
                    projection.name,
                    applied,
                    time.perf_counter() - started,
                    checkpoint.token(),
                    resumed,
                )
            async with conn.transaction():
                if await _schema_exists(conn, live):
                    # Hold the live checkpoint: the projector waits for the swap, then finds
                    # its checkpoint moved and carries on from the new schema's.
                    await read_checkpoint(conn, live, lock=True)
                while events := await store.read_all(checkpoint, limit=batch):
                    await apply_batch(
                        conn, projection, nxt, checkpoint, events, events[-1].at, notify=False
                    )
                    checkpoint = events[-1].at
                    applied += len(events)
                if await _schema_exists(conn, live):
                    await conn.execute(
                        sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                            sql.Identifier(live), sql.Identifier(old)
                        )
                    )
                await conn.execute(
                    sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                        sql.Identifier(nxt), sql.Identifier(live)
                    )
                )
                await conn.execute(
                    "SELECT pg_notify(%s, %s)",
                    (PROJECTION_CHANNEL, f"{projection.name}:{checkpoint.token()}"),
                )
            # Separately: a projector transaction still holding the old tables finishes first.
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(old))
            )
        finally:
            await conn.execute(
                "SELECT pg_advisory_unlock(hashtextextended(%s, 7233))",
                (f"rebuild:{projection.name}",),
            )
    return RebuildResult(
        projection.name, applied, time.perf_counter() - started, checkpoint.token(), resumed
    )
