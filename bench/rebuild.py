"""`hubbub projections rebuild NAME` over the whole log: every projection rebuilt afresh
into its next schema and swapped in, timed end to end.

Optional: while the rebuild cannot be imported, the run reports this workload as
skipped, "not yet available". The log gets `rebuild_users` registrations on top of what
the other workloads left, so the users read model has rows to write, not only events
to pass over.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from bench.append_batched import load
from bench.context import BenchContext
from bench.read_all import fill, settle
from bench.result import Result, rate
from bench.timing import stopwatch
from events.envelope import ENCODER
from events.registry import encode
from events.user import UserRegistered, user_stream
from infra.store import NO_STREAM, EventStore, NewEvent, StreamAppend
from projections.ops import rebuild_projection  # ImportError until the rebuild is written
from projections.registry import ALL

USERS_PER_CALL = 100


def _registration() -> StreamAppend:
    user_id = str(uuid.uuid4())
    type_name, version, data = encode(
        UserRegistered(user_id=user_id, username=f"u{user_id[:13]}", display_name="Bench User",
                       password_hash="-", registered_at=datetime.now(UTC))
    )  # fmt: skip
    metadata = ENCODER.encode({"actor_id": user_id, "correlation_id": str(uuid.uuid4())})
    event = NewEvent(event_id=uuid.uuid4(), type=type_name, data=data, metadata=metadata,
                     schema_version=version)  # fmt: skip
    return StreamAppend(user_stream(user_id), NO_STREAM, [event])


async def run(ctx: BenchContext) -> Result:
    """Events/s of rebuilding every projection over the whole log, one after another."""
    users = ctx.sizes.rebuild_users
    async with ctx.pool(4, "bench-rebuild") as pool:
        store = EventStore(pool, notify=False)
        await fill(ctx, store)
        calls = [[_registration() for _ in range(USERS_PER_CALL)]
                 for _ in range(users // USERS_PER_CALL)]  # fmt: skip
        await load(store, calls)
        await settle(store)
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM events")
            row = await cur.fetchone()
        log_size = int(row[0]) if row else 0
        with stopwatch() as m:
            done = [await rebuild_projection(pool, projection) for projection in ALL]
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM rm_users.users")
            row = await cur.fetchone()
    rows = int(row[0]) if row else 0
    if rows != len(calls) * USERS_PER_CALL:
        raise RuntimeError(
            f"users read model has {rows} rows, expected {len(calls) * USERS_PER_CALL}"
        )
    passed = sum(r.events for r in done)
    return rate("rebuild", passed, m, "events/s", log_events=log_size, user_rows=rows,
                projections=",".join(r.name for r in done))  # fmt: skip
