"""Verifying the log: every stream's hash chain, and the global chain the relay anchored.

A changed event breaks its own hash; an inserted or reordered one breaks its stream's
chain; a deleted last event or a deleted whole stream leaves the streams intact but
breaks the global chain at the next anchor.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool

from events.envelope import GENESIS_HASH, Position, chain_hash, content_digest, global_link
from infra.store import EventStore, batches_read_ahead


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


# What checking a chain needs, in the form it is hashed in: the id's 16 bytes and the
# recording time in microseconds (exact: extract() is numeric since PostgreSQL 14), so no
# UUID or datetime is made only to be taken apart again (a third of a verify's CPU). Read
# as binary results: every column then goes through one of psycopg's C loaders (infra.db).
CHAIN_COLUMNS = (
    "uuid_send(event_id), stream_id, stream_version, txid, position, type, schema_version,"
    " (extract(epoch FROM recorded_at) * 1000000)::bigint, data, metadata, prev_hash, hash"
)
ChainRow = tuple[bytes, str, int, int, int, str, int, int, bytes, bytes, bytes, bytes]


def _links(row: ChainRow, prev_hash: bytes) -> bool:
    """Whether the row is intact and follows `prev_hash`."""
    event_id, stream, version, _, _, type_, schema_version, recorded, data, metadata, prev, hash_ = row  # fmt: skip
    digest = content_digest(event_id, stream, type_, schema_version, data, metadata)
    return prev == prev_hash and hash_ == chain_hash(prev_hash, version, recorded, digest)


async def verify_stream(store: EventStore, stream_id: str) -> StreamVerdict:
    """Walk one stream's chain from its first event; name the first version that fails."""
    prev, expected_version, count = GENESIS_HASH, 1, 0
    async for batch in _stream_rows(store.pool, stream_id):
        for row in batch:
            count += 1
            if row[2] != expected_version:
                return StreamVerdict(
                    False, count, None, expected_version, "a version is missing or repeated"
                )
            if not _links(row, prev):
                return StreamVerdict(False, count, None, row[2], "hash mismatch")
            prev, expected_version = row[11], expected_version + 1
    return StreamVerdict(True, count, prev.hex() if count else None, None)


async def _stream_rows(
    pool: AsyncConnectionPool, stream_id: str, size: int = 5000
) -> AsyncIterator[list[ChainRow]]:
    version = 1
    while True:
        async with pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {CHAIN_COLUMNS} FROM events WHERE stream_id = %s AND stream_version >= %s"
                " ORDER BY stream_version LIMIT %s",
                (stream_id, version, size),
                binary=True,
            )
            rows: list[ChainRow] = await cur.fetchall()
        if rows:
            yield rows
        if len(rows) < size:
            return
        version = rows[-1][2] + 1


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

    def fail(reason: str, row: ChainRow | None) -> GlobalVerdict:
        verdict.ok = False
        verdict.reason = reason
        verdict.events = count
        if row is not None:
            verdict.first_bad_stream = row[1]
            verdict.first_bad_version = row[2]
            verdict.first_bad_position = Position(row[3], row[4]).token()
        return verdict

    async for rows in _all_rows(pool, batch):
        for row in rows:
            stream, version, at = row[1], row[2], (row[3], row[4])  # compares as a Position
            # An anchor we walked past without landing on it: its event is gone.
            if next_anchor < len(anchors) and anchors[next_anchor][0] < at:
                return fail(
                    f"the event anchored at {anchors[next_anchor][0].token()} is missing", row
                )
            head, prev = heads.get(stream, (0, GENESIS_HASH))
            if version != head + 1:
                return fail("a version is missing or repeated in its stream", row)
            if not _links(row, prev):
                return fail("hash mismatch", row)
            heads[stream] = (version, row[11])
            chain, count = global_link(chain, row[11]), count + 1
            if next_anchor < len(anchors) and anchors[next_anchor][0] == at:
                _, anchored_chain, anchored_count = anchors[next_anchor]
                if anchored_chain != chain or anchored_count != count:
                    return fail("the global chain does not match the relay's anchor here", row)
                next_anchor += 1
                verdict.anchors_checked = next_anchor
        verdict.events = count
    if next_anchor < len(anchors):
        return fail(f"events up to {anchors[-1][0].token()} were anchored but are gone", None)
    verdict.streams = len(heads)
    verdict.unanchored = count - (anchors[-1][2] if anchors else 0)
    return verdict


async def _all_rows(pool: AsyncConnectionPool, size: int) -> AsyncGenerator[list[ChainRow], None]:
    """Every committed row in (txid, position) order, without the commit-safe bound: an
    auditor checks what is there, including rows not yet safe to tail."""

    async def read(after: Position) -> list[ChainRow]:
        async with pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {CHAIN_COLUMNS} FROM events WHERE (txid, position) > (%s::xid8, %s)"
                " ORDER BY txid, position LIMIT %s",
                (str(after.txid), after.position, size),
                prepare=True,
                binary=True,
            )
            rows: list[ChainRow] = await cur.fetchall()
            return rows

    batches = batches_read_ahead(read, Position(0, 0), at=lambda row: Position(row[3], row[4]))
    async with contextlib.aclosing(batches):
        async for rows in batches:
            yield rows
