"""Verifying the log: every stream's hash chain, and the global chain the relay anchored.

A changed event breaks its own hash; an inserted or reordered one breaks its stream's
chain; a deleted last event or a deleted whole stream leaves the streams intact but
breaks the global chain at the next anchor.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool

from events.envelope import GENESIS_HASH, Position, chain_hash, content_digest, global_link, micros
from infra.store import COLUMNS, EventStore, RecordedEvent, batches_read_ahead


@dataclass(frozen=True)
class StreamVerdict:
    """The result of verifying one stream (the contract's verify response)."""

    ok: bool
    events: int
    head_hash: str | None
    first_bad_version: int | None
    reason: str | None = None


@dataclass
class GlobalVerdict:
    """The result of verifying the whole log."""

    ok: bool = True
    events: int = 0
    anchors_checked: int = 0
    first_bad_stream: str | None = None
    first_bad_version: int | None = None
    first_bad_position: str | None = None
    reason: str | None = None
    streams: int = 0
    unanchored: int = field(default=0)


def _event_ok(event: RecordedEvent, prev_hash: bytes) -> bool:
    digest = content_digest(
        event.event_id,
        event.stream_id,
        event.type,
        event.schema_version,
        event.data,
        event.metadata,
    )
    return event.prev_hash == prev_hash and event.hash == chain_hash(
        prev_hash, event.stream_version, micros(event.recorded_at), digest
    )


async def verify_stream(store: EventStore, stream_id: str) -> StreamVerdict:
    """Walk one stream's chain from its first event; name the first version that fails."""
    prev, expected_version, count = GENESIS_HASH, 1, 0
    async for batch in store.iter_stream(stream_id):
        for event in batch:
            count += 1
            if event.stream_version != expected_version:
                return StreamVerdict(
                    False, count, None, expected_version, "a version is missing or repeated"
                )
            if not _event_ok(event, prev):
                return StreamVerdict(False, count, None, event.stream_version, "hash mismatch")
            prev, expected_version = event.hash, expected_version + 1
    return StreamVerdict(True, count, prev.hex() if count else None, None)


async def _anchors(pool: AsyncConnectionPool) -> list[tuple[Position, bytes, int]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT txid, position, chain_hash, event_count FROM relay_chain ORDER BY txid, position"
        )
        return [(Position(r[0], r[1]), r[2], r[3]) for r in await cur.fetchall()]


async def verify_all(pool: AsyncConnectionPool, *, batch: int = 10_000) -> GlobalVerdict:
    """Walk the whole log in commit-safe order: every stream chain, and the global chain
    against each anchor the relay wrote."""
    verdict = GlobalVerdict()
    anchors = await _anchors(pool)
    next_anchor = 0
    heads: dict[str, tuple[int, bytes]] = {}
    chain, count = GENESIS_HASH, 0

    def fail(reason: str, event: RecordedEvent | None) -> GlobalVerdict:
        verdict.ok = False
        verdict.reason = reason
        if event is not None:
            verdict.first_bad_stream = event.stream_id
            verdict.first_bad_version = event.stream_version
            verdict.first_bad_position = event.at.token()
        return verdict

    async for events in _all_batches(pool, batch):
        for event in events:
            # An anchor we walked past without landing on it: its event is gone.
            while next_anchor < len(anchors) and anchors[next_anchor][0] < event.at:
                return fail(
                    f"the event anchored at {anchors[next_anchor][0].token()} is missing", event
                )
            version, prev = heads.get(event.stream_id, (0, GENESIS_HASH))
            if event.stream_version != version + 1:
                return fail("a version is missing or repeated in its stream", event)
            if not _event_ok(event, prev):
                return fail("hash mismatch", event)
            heads[event.stream_id] = (event.stream_version, event.hash)
            chain, count = global_link(chain, event.hash), count + 1
            verdict.events = count
            if next_anchor < len(anchors) and anchors[next_anchor][0] == event.at:
                _, anchored_chain, anchored_count = anchors[next_anchor]
                if anchored_chain != chain or anchored_count != count:
                    return fail("the global chain does not match the relay's anchor here", event)
                next_anchor += 1
                verdict.anchors_checked = next_anchor
    if next_anchor < len(anchors):
        return fail(f"events up to {anchors[-1][0].token()} were anchored but are gone", None)
    verdict.streams = len(heads)
    verdict.unanchored = count - (anchors[-1][2] if anchors else 0)
    return verdict


async def _all_batches(
    pool: AsyncConnectionPool, size: int
) -> AsyncGenerator[list[RecordedEvent], None]:
    """Every committed row in (txid, position) order, without the commit-safe bound: an
    auditor checks what is there, including rows not yet safe to tail."""

    async def read(after: Position) -> list[RecordedEvent]:
        async with pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {COLUMNS} FROM events WHERE (txid, position) > (%s::xid8, %s) ORDER BY txid, position LIMIT %s",
                (str(after.txid), after.position, size),
                prepare=True,
            )
            return [RecordedEvent.from_row(r) for r in await cur.fetchall()]

    async with contextlib.aclosing(batches_read_ahead(read, Position(0, 0))) as batches:
        async for events in batches:
            yield events
