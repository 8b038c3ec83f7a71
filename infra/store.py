"""The PostgreSQL event store: append with expected versions, read streams, read the log in
commit-safe order (see the 0001 migration for why that order is safe)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from bisect import bisect_left
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate, starmap
from typing import Any, Final, TypeVar
from uuid import UUID

import msgspec
import psycopg
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from events.envelope import (
    GENESIS_HASH,
    ORIGIN,
    Envelope,
    Position,
    category_of,
    chain_hash,
    content_digest,
    micros,
)
from infra.pipeline import one_row


class _AppendMetrics(Collector):
    """hubbub_store_appends_total (by outcome), hubbub_store_appended_events_total and the
    hubbub_store_append_seconds histogram, exposed as prometheus_client's Counter and
    Histogram would, but counted in plain numbers: theirs take a lock and check their state
    at every step, a quarter of an append's own CPU. Appends run on the event loop's one
    thread, so nothing else writes them."""

    BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

    def __init__(self) -> None:
        self.created = time.time()
        self.outcomes = dict.fromkeys(("ok", "duplicate", "conflict", "failed"), 0)
        self.events = 0
        self.counts = [0] * (len(self.BUCKETS) + 1)  # by bucket, not cumulative; last: +Inf
        self.seconds = 0.0

    def observe(self, seconds: float) -> None:
        """One append took `seconds`, whatever its outcome."""
        self.counts[bisect_left(self.BUCKETS, seconds)] += 1  # le: the first bound >= it
        self.seconds += seconds

    def collect(self) -> Iterator[Metric]:
        appends = CounterMetricFamily(
            "hubbub_store_appends",
            "Appends (one transaction each) by outcome: ok, duplicate, conflict or failed",
            labels=["outcome"],
        )
        for outcome, count in self.outcomes.items():
            appends.add_metric([outcome], count, created=self.created)
        yield appends
        yield CounterMetricFamily(
            "hubbub_store_appended_events", "Events appended", self.events, created=self.created
        )
        name = "hubbub_store_append_seconds"
        seconds = HistogramMetricFamily(name, "Time an append takes, whatever its outcome")
        bounds = [*map(floatToGoString, self.BUCKETS), "+Inf"]
        seconds.add_metric(
            [], list(zip(bounds, accumulate(self.counts), strict=True)), self.seconds
        )
        seconds.add_sample(f"{name}_created", {}, self.created)
        yield seconds


APPEND_METRICS: Final = _AppendMetrics()
REGISTRY.register(APPEND_METRICS)

ANY: Final = -1
NO_STREAM: Final = 0


class StoreError(Exception):
    """Base of everything the event store raises."""


class ConcurrencyError(StoreError):
    """A stream was not at the version the writer expected."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream_id} is at version {actual}, expected {expected}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class StoreUnavailable(StoreError):
    """PostgreSQL could not be reached or the operation failed for a reason of its own."""


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event about to be appended; `data` and `metadata` are JSON documents."""

    event_id: UUID
    type: str
    data: bytes
    metadata: bytes
    schema_version: int = 1


class StreamAppend(msgspec.Struct, frozen=True):
    """Events for one stream, with the version the writer believes the stream is at: a
    version, NO_STREAM or ANY. Anything below ANY is refused here, so that no append path
    can read it as "any" and another as "never"."""

    stream_id: str
    expected: int
    events: Sequence[NewEvent]

    def __post_init__(self) -> None:
        if self.expected < ANY:
            raise ValueError(f"expected version {self.expected} is below ANY ({ANY})")


def at_expected(expected: int, actual: int) -> bool:
    """Whether a stream at version `actual` is where a writer expecting `expected` thinks."""
    return expected == ANY or actual == expected


class Idempotency(msgspec.Struct, frozen=True, kw_only=True):
    """An idempotency key with the fingerprint of its request and the response to replay.

    `upto` is the index, among the append's events, of the request's last event (-1: the
    append's last): one append may carry several requests' events, each with its key.
    """

    scope: str
    key: str
    request_hash: bytes
    response: bytes
    upto: int = -1


class DuplicateKey(StoreError):
    """One of several idempotency keys of an append was recorded meanwhile; nothing was
    appended. Look the keys up again."""


class AppendResult(msgspec.Struct, frozen=True, gc=False):
    """What an append did. With `duplicate`, nothing was appended and `stored_*` hold the
    first request's fingerprint and response. (A Struct: it builds in a tenth of a frozen
    dataclass's time, one per append.)"""

    txid: int
    positions: list[int]
    versions: list[int]
    recorded_at: datetime
    duplicate: bool = False
    stored_hash: bytes | None = None
    stored_response: bytes | None = None

    @property
    def position(self) -> Position:
        """The last appended event's place in the global order."""
        return Position(self.txid, self.positions[-1] if self.positions else 0)


class RecordedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as stored, with its place in the commit-safe order. Its fields are in the
    order of `COLUMNS`: a selected row is `RecordedEvent(*row)` (0.1 us, where naming the
    twelve fields cost 0.47)."""

    event_id: UUID
    stream_id: str
    stream_version: int
    txid: int
    position: int
    type: str
    schema_version: int
    recorded_at: datetime
    data: bytes
    metadata: bytes
    prev_hash: bytes
    hash: bytes

    @property
    def at(self) -> Position:
        return Position(self.txid, self.position)

    def envelope(self) -> Envelope:
        """The contract's envelope for this event."""
        return Envelope(
            event_id=str(self.event_id),
            stream_id=self.stream_id,
            stream_version=self.stream_version,
            position=self.at.token(),
            type=self.type,
            schema_version=self.schema_version,
            recorded_at=self.recorded_at,
            data=msgspec.Raw(self.data),
            metadata=msgspec.Raw(self.metadata),
            prev_hash=self.prev_hash.hex(),
            hash=self.hash.hex(),
        )


# What a reader selects for a RecordedEvent: its fields, in their order.
COLUMNS: Final = ", ".join(RecordedEvent.__struct_fields__)
# The same, as the envelope wants them: PostgreSQL writes the id and the hashes as text for
# less than psycopg and Python spend making objects of them and then strings again (an
# audit export costs a third less CPU an event).
ENVELOPE_COLUMNS: Final = (
    "event_id::text, stream_id, stream_version, txid, position, type, schema_version, "
    "recorded_at, data, metadata, encode(prev_hash, 'hex'), encode(hash, 'hex')"
)


def _envelope(row: tuple[Any, ...]) -> Envelope:
    """The envelope of a row selected with `ENVELOPE_COLUMNS` (as RecordedEvent.envelope)."""
    return Envelope(
        event_id=row[0],
        stream_id=row[1],
        stream_version=row[2],
        position=Position(row[3], row[4]).token(),
        type=row[5],
        schema_version=row[6],
        recorded_at=row[7],
        data=msgspec.Raw(row[8]),
        metadata=msgspec.Raw(row[9]),
        prev_hash=row[10],
        hash=row[11],
    )


# Several events, or several streams: two round trips in one transaction. First the
# heads of the streams and the transaction's now(); then Python checks the expected
# versions, chains the hashes (the same as the single-event statement computes) and
# inserts everything at once. A writer that appends to one of the streams in between
# meets the events_stream_version unique index, as in the single-event path.
# Binary parameters: as text, psycopg escapes every JSON document of an array with a
# Python regex, which cost three quarters of a batched append's time.
_HEADS_SQL: Final = """
SELECT now(), s.id, h.stream_version, h.hash
FROM unnest(%b::text[]) AS s(id)
LEFT JOIN LATERAL (
    SELECT stream_version, hash FROM events WHERE stream_id = s.id
    ORDER BY stream_version DESC LIMIT 1
) AS h ON true
"""
_INSERT_MANY_SQL: Final = """
WITH ins AS (
    INSERT INTO events (event_id, stream_id, category, stream_version, type, schema_version,
                        recorded_at, data, metadata, prev_hash, hash)
    SELECT u.eid, u.sid, split_part(u.sid, '-', 1), u.ver, u.typ, u.sv, now(), u.dat::json,
           u.meta::json, u.prev, u.h
    FROM unnest(%b::uuid[], %b::text[], %b::bigint[], %b::text[], %b::integer[], %b::text[],
                %b::text[], %b::bytea[], %b::bytea[])
         WITH ORDINALITY AS u(eid, sid, ver, typ, sv, dat, meta, prev, h, ord)
    ORDER BY u.ord
    RETURNING position
){idem}
SELECT pg_current_xact_id(), array_agg(position ORDER BY position) FROM ins
"""
_IDEM_MANY_CTE: Final = """, idem AS (
    INSERT INTO idempotency_keys (scope, key, request_hash, response, position)
    SELECT i.scope, i.key, i.h, i.resp, p.position
    FROM unnest(%b::text[], %b::text[], %b::bytea[], %b::text[], %b::bigint[])
         AS i(scope, key, h, resp, n)
    JOIN (SELECT position, row_number() OVER (ORDER BY position) AS n FROM ins) AS p
      ON p.n = i.n
)"""
# By whether the append carries idempotency keys, as _INSERT_EACH below.
_INSERT_MANY: Final = {i: _INSERT_MANY_SQL.replace("{idem}", _IDEM_MANY_CTE if i else "")
                       for i in (False, True)}  # fmt: skip

# From this many events, an append COPYs them in: COPY inserts a page of rows at a time,
# with one WAL record a page and the table extended in bulk, where INSERT ... SELECT goes
# row by row. It costs two round trips more (no pipeline around a COPY) and extends the
# table ahead, so appends of a few hundred keep the INSERT: a hot channel's (up to 200
# events) gained nothing from COPY over four A/B pairs and lost a third in two of them.
COPY_FROM: Final = 256
_COPY_SQL: Final = """
COPY events (position, event_id, stream_id, category, stream_version, type, schema_version,
             recorded_at, data, metadata, prev_hash, hash) FROM STDIN (FORMAT BINARY)"""
# In binary COPY a json field is its UTF-8 text, which json_recv checks (encoding and
# syntax): the events' encoded bytes go as they are, by the bytea dumper, which writes a
# value's bytes unchanged. (As str they were decoded only to be encoded again.)
_COPY_TYPES: Final = (
    "int8", "uuid", "text", "text", "int8", "text", "int4", "timestamptz", "bytea", "bytea",
    "bytea", "bytea",
)  # fmt: skip
# A COPY's positions, drawn before it from the identity sequence in one statement (nextval
# per row inside COPY cost a tenth of the server's CPU), with the transaction's id. They
# are what the column's default would give: this backend draws them in order, so any
# events the caller's transaction appended before lie below them.
_POSITIONS_SQL: Final = """
SELECT pg_current_xact_id(), array_agg(p ORDER BY p)
FROM (SELECT nextval('events_position_seq') FROM generate_series(1, %s)) AS drawn(p)"""
_IDEM_KEYS_SQL: Final = """
INSERT INTO idempotency_keys (scope, key, request_hash, response, position)
SELECT * FROM unnest(%b::text[], %b::text[], %b::bytea[], %b::text[], %b::bigint[])"""

_GENESIS_SQL: Final = "'\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea"


def _chain_hash_sql(prev: str, version: str, digest: str) -> str:
    """events.envelope.chain_hash in SQL, over these expressions, recorded now()."""
    now = "int8send((extract(epoch FROM now()) * 1000000)::bigint)"
    return f"sha256({prev} || int8send({version}) || {now} || {digest})"


# One event: one statement, each parameter once (a row `p` of them). The stream's head (its
# last version and hash, or 0 and the genesis hash) must be at the expected version, or
# nothing is inserted and no row returned (a caller's transaction stays usable); the hash
# is chained as chain_hash does it. A top-level INSERT ... RETURNING, not a CTE: no
# tuplestore for the one row.
_INSERT_ONE_SQL: Final = f"""
INSERT INTO events (event_id, stream_id, category, stream_version, type, schema_version,
                    recorded_at, data, metadata, prev_hash, hash)
SELECT p.eid, p.sid, split_part(p.sid, '-', 1), head.v + 1, p.typ, p.sv, now(), p.dat, p.meta,
       head.h, {_chain_hash_sql("head.h", "head.v + 1", "p.digest")}
FROM (SELECT %s::uuid, %s::text, %s::bigint, %s::text, %s::integer, %s::json, %s::json, %s::bytea)
     AS p(eid, sid, expected, typ, sv, dat, meta, digest)
LEFT JOIN LATERAL (
    SELECT stream_version, hash FROM events WHERE stream_id = p.sid
    ORDER BY stream_version DESC LIMIT 1
) AS last ON true
CROSS JOIN LATERAL (
    SELECT coalesce(last.stream_version, 0) AS v, coalesce(last.hash, {_GENESIS_SQL}) AS h
) AS head
WHERE p.expected = -1 OR head.v = p.expected
RETURNING txid, position, stream_version, recorded_at, hash{{hint}}"""
# An event whose stream's head the appender knows (a new stream's, or one it appended itself,
# see _Heads): no head to look up, the version and previous hash given. A writer that got
# there first holds that version, and the unique index refuses this one (23505).
_INSERT_KNOWN_SQL: Final = f"""
INSERT INTO events (event_id, stream_id, category, stream_version, type, schema_version,
                    recorded_at, data, metadata, prev_hash, hash)
SELECT p.eid, p.sid, split_part(p.sid, '-', 1), p.v, p.typ, p.sv, now(), p.dat, p.meta, p.prev,
       {_chain_hash_sql("p.prev", "p.v", "p.digest")}
FROM (SELECT %s::uuid, %s::text, %s::bigint, %s::text, %s::integer, %s::json, %s::json, %s::bytea,
             %s::bytea)
     AS p(eid, sid, v, typ, sv, dat, meta, digest, prev)
RETURNING txid, position, stream_version, recorded_at, hash{{hint}}"""
# Without a key the idempotency CTE still costs ~10 us of server CPU: left out then.
_IDEM_ONE_SQL: Final = """
WITH ins AS ({insert}
), idem AS (
    INSERT INTO idempotency_keys (scope, key, request_hash, response, position)
    SELECT %s, %s, %s, %s, ins.position FROM ins
)
SELECT txid, position, stream_version, recorded_at, hash FROM ins"""
# The hint an append may carry (see AppendNotifier): PostgreSQL delivers it at the commit,
# and only when the row was inserted.
_NOTIFY: Final = "pg_notify('hubbub_events', '')"
# What the projector NOTIFYs as each batch commits (projections.runtime): the relay
# listens too, as a projector's transaction holds back the commit-safe horizon.
PROJECTION_CHANNEL: Final = "hubbub_projection"


def _append_one_sql(known: bool, idem: bool, hint: bool) -> str:
    insert = (_INSERT_KNOWN_SQL if known else _INSERT_ONE_SQL).replace(
        "{hint}", f", {_NOTIFY}" if hint else ""
    )
    return _IDEM_ONE_SQL.replace("{insert}", insert) if idem else insert


# By (head known, with an idempotency key, with the hint). Parameters: event id, stream,
# expected version (known: the new version), type, schema version, data, metadata, content
# digest[, known: the previous hash][, scope, key, request hash, response].
_APPEND_ONE: Final = {
    (k, i, h): _append_one_sql(k, i, h) for k in (False, True) for i in (False, True)
    for h in (False, True)
}  # fmt: skip

# Several streams, one event each (what the write API's combiner sends): one statement,
# as the single-event one does it, for every stream at once. Nothing is inserted unless
# every head is at its expected version; the heads come back either way, so that the
# caller can name the stream that was elsewhere.
_INSERT_EACH_SQL: Final = f"""
WITH h AS (
    SELECT p.*, coalesce(last.stream_version, 0) AS v, coalesce(last.hash, {_GENESIS_SQL}) AS hh
    FROM unnest(%b::uuid[], %b::text[], %b::bigint[], %b::text[], %b::integer[], %b::text[],
                %b::text[], %b::bytea[])
         WITH ORDINALITY AS p(eid, sid, expected, typ, sv, dat, meta, digest, ord)
    LEFT JOIN LATERAL (
        SELECT stream_version, hash FROM events WHERE stream_id = p.sid
        ORDER BY stream_version DESC LIMIT 1
    ) AS last ON true
), ins AS (
    INSERT INTO events (event_id, stream_id, category, stream_version, type, schema_version,
                        recorded_at, data, metadata, prev_hash, hash)
    SELECT eid, sid, split_part(sid, '-', 1), v + 1, typ, sv, now(), dat::json, meta::json, hh,
           {_chain_hash_sql("hh", "v + 1", "digest")}
    FROM h WHERE NOT EXISTS (SELECT 1 FROM h WHERE NOT (expected = -1 OR v = expected))
    ORDER BY ord
    RETURNING position
){{idem}}
SELECT pg_current_xact_id(), (SELECT array_agg(position ORDER BY position) FROM ins), now(),
       (SELECT array_agg(v ORDER BY ord) FROM h){{hint}}"""


def _insert_each_sql(idem: bool, hint: bool) -> str:
    return _INSERT_EACH_SQL.replace("{idem}", _IDEM_MANY_CTE if idem else "").replace(
        "{hint}", f", {_NOTIFY}" if hint else ""
    )


_INSERT_EACH: Final = {(i, h): _insert_each_sql(i, h) for i in (False, True) for h in (False, True)}

# Only transactions that have ended lie below our snapshot's xmin: nothing can appear
# there any more, so reading up to it never skips an event committed late.
COMMIT_SAFE: Final = "txid < pg_snapshot_xmin(pg_current_snapshot())"


@dataclass(frozen=True, kw_only=True)
class Selection:
    """The part of the log a reader wants: every field given narrows it (none: all of it)."""

    stream_id: str | None = None
    categories: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    since: datetime | None = None  # recorded at or after
    until: datetime | None = None  # recorded before
    upto: Position | None = None  # at or before: a long read's fixed end

    def conditions(self) -> tuple[str, list[Any]]:
        """SQL conditions (each starting with AND) and their parameters; stream_id aside."""
        sql, params = "", list[Any]()
        if self.categories:
            sql += " AND category = ANY(%s::text[])"
            params.append(list(self.categories))
        if self.types:
            sql += " AND type = ANY(%s::text[])"
            params.append(list(self.types))
        if self.since is not None:
            sql += " AND recorded_at >= %s"
            params.append(self.since)
        if self.until is not None:
            sql += " AND recorded_at < %s"
            params.append(self.until)
        if self.upto is not None:
            sql += " AND (txid, position) <= (%s::xid8, %s)"
            params += [str(self.upto.txid), self.upto.position]
        return sql, params


EVERYTHING: Final = Selection()


def _log_query(
    after: Position, limit: int, where: Selection, columns: str
) -> tuple[str, list[Any]]:
    extra, params = where.conditions()
    if where.stream_id is None:
        sql = (
            f"SELECT {columns} FROM events WHERE (txid, position) > (%s::xid8, %s) AND {COMMIT_SAFE}"
            f"{extra} ORDER BY txid, position LIMIT %s"
        )
        return sql, [str(after.txid), after.position, *params, limit]
    # One stream: along its own index, in version order, which is its commit order (a
    # stream's next version is written by a later transaction; verify_all checks it).
    # Resuming after one of its own events starts at that event's version: paging through
    # a stream of millions costs a batch a page, not a scan from version 1.
    sql = (
        f"SELECT {columns} FROM events WHERE stream_id = %s AND stream_version > coalesce(("
        "SELECT stream_version FROM events WHERE txid = %s::xid8 AND position = %s"
        " AND stream_id = %s), 0)"
        f" AND (txid, position) > (%s::xid8, %s) AND {COMMIT_SAFE}{extra}"
        " ORDER BY stream_version LIMIT %s"
    )
    txid, position = str(after.txid), after.position
    return sql, [where.stream_id, txid, position, where.stream_id, txid, position, *params, limit]


def _conflict(e: psycopg.Error, streams: list[str], expected: list[int]) -> ConcurrencyError | None:
    """A writer that raced us to a version of a stream, as the unique index reports it."""
    if e.sqlstate == "23505" and e.diag.constraint_name == "events_stream_version":
        # "Key (stream_id, stream_version)=(<stream>, <version>) already exists."
        detail = e.diag.message_detail or ""
        inner = detail[detail.find(")=(") + 3 : detail.rfind(")")]
        stream, _, version = inner.rpartition(", ")
        if stream in streams:
            return ConcurrencyError(stream, expected[streams.index(stream)], int(version))
        return ConcurrencyError(streams[0], expected[0], -1)
    return None


T = TypeVar("T")


async def batches_read_ahead(
    read: Callable[[Position], Awaitable[list[T]]],
    after: Position,
    at: Callable[[T], Position],
) -> AsyncGenerator[list[T], None]:
    """The batches `read` gives from `after` on (each after the place `at` gives of the
    last one's last item), until an empty one. Each next batch is read while the caller
    works on the last, so that PostgreSQL's part of a whole-log read overlaps this
    process's. Two batches at most are held; leaving early cancels the read in flight."""
    pending = asyncio.ensure_future(read(after))
    try:
        while batch := await pending:
            pending = asyncio.ensure_future(read(at(batch[-1])))
            yield batch
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending


class _Heads:
    """The head (last version and its hash) of streams this store's own appends ended, so
    that the next single-event append to one skips the head lookup (a join, an index scan
    and their executor set-up: a tenth of the append's server CPU). A version's hash never
    changes, so an entry stays true: if the stream has moved on, the unique index refuses
    the insert. Only appends that committed on their own are recorded, never one inside a
    caller's transaction, which may yet roll back: a head that was never committed would
    let the next append skip a version. The least recently recorded go first."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._heads: dict[str, tuple[int, bytes]] = {}

    def previous(self, stream: str, expected: int) -> bytes | None:
        """The hash the stream's next event chains to, when the stream is at `expected`
        as far as this store knows (a new stream always is); None when unknown."""
        if expected == NO_STREAM:
            return GENESIS_HASH
        head = self._heads.get(stream)
        return head[1] if head is not None and head[0] == expected else None

    def record(self, stream: str, version: int, event_hash: bytes) -> None:
        heads = self._heads
        heads.pop(stream, None)
        heads[stream] = (version, event_hash)
        if len(heads) > self.size:
            del heads[next(iter(heads))]

    def forget(self, stream: str) -> None:
        self._heads.pop(stream, None)


class AppendNotifier:
    """Wakes tailing readers (the relay) after appends, with NOTIFY hubbub_events. A hint
    only: the relay polls as well.

    A NOTIFY in every append would make PostgreSQL serialise the appending commits on one
    lock (and lose group commit), and one sent on its own after each would take pool
    connections from the writers. So hints are coalesced, at most one per `interval`. The
    single-event append that finds one due carries it (`claim`): its statement notifies,
    and PostgreSQL delivers the hint at its commit, with no statement or connection of its
    own. A hint covers the appends that ended before it was claimed; the others leave one
    owed (`poke`), which a background task sends on a pool connection when no append has
    carried one for `interval` + `grace`: at the end of a burst, or at once when idle.
    """

    def __init__(
        self, pool: AsyncConnectionPool, interval: float = 0.005, grace: float = 0.001
    ) -> None:
        self.pool = pool
        self.interval = interval
        self.grace = grace
        self._claimed = -math.inf  # time.monotonic() of the last hint claimed or sent
        self._owed = -math.inf  # of the last append that no hint may cover
        self._task: asyncio.Task[None] | None = None

    def claim(self) -> bool:
        """Whether the append about to be sent is to carry the hint (one is due); if it
        then fails, it must `poke`."""
        now = time.monotonic()
        if now - self._claimed < self.interval:
            return False
        self._claimed = now
        return True

    def poke(self) -> None:
        """An append ended that no hint may cover, or a claimed hint did not go out: make
        sure one follows."""
        self._owed = time.monotonic()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._owed >= self._claimed:
            wait = self._claimed + self.interval + self.grace - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # an append may carry it meanwhile
                continue
            self._claimed = time.monotonic()
            try:
                async with self.pool.connection() as conn:
                    await conn.execute(f"SELECT {_NOTIFY}")
            except (psycopg.Error, PoolClosed, PoolTimeout):
                return  # a hint only: the relay's polling covers for it

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _idempotency_params(keys: list[Idempotency], events: int) -> tuple[list[Any], ...]:
    """The idempotency CTE's arrays: each key with the ordinal of the event it ends at."""
    return (
        [k.scope for k in keys], [k.key for k in keys], [k.request_hash for k in keys],
        [k.response.decode() for k in keys],
        [(k.upto if k.upto >= 0 else events + k.upto) + 1 for k in keys],
    )  # fmt: skip


@dataclass(frozen=True)
class _Columns:
    """The events of a multi-event append, column by column, as _append_many sends them."""

    streams: list[str]
    expected: list[int]
    stream_ids: list[str]
    event_ids: list[UUID]
    types: list[str]
    schema_versions: list[int]
    data: list[bytes]
    metadata: list[bytes]
    digests: list[bytes]

    @classmethod
    def of(cls, appends: Sequence[StreamAppend]) -> _Columns:
        """ValueError when a stream appears twice or there is no event at all."""
        c = cls([], [], [], [], [], [], [], [], [])
        for a in appends:
            if a.stream_id in c.streams:
                raise ValueError(f"stream {a.stream_id} appears twice in one append")
            c.streams.append(a.stream_id)
            c.expected.append(a.expected)
            # Column by column: a comprehension a column costs a third less than one loop
            # appending to every column.
            events, sid = a.events, a.stream_id
            c.stream_ids.extend([sid] * len(events))
            c.event_ids.extend([e.event_id for e in events])
            c.types.extend([e.type for e in events])
            c.schema_versions.extend([e.schema_version for e in events])
            c.data.extend([e.data for e in events])
            c.metadata.extend([e.metadata for e in events])
            c.digests.extend(
                content_digest(e.event_id, sid, e.type, e.schema_version, e.data, e.metadata)
                for e in events
            )
        if not c.event_ids:
            raise ValueError("an append needs at least one event")
        return c

    def json_texts(self) -> tuple[list[str], list[str]]:
        """Data and metadata as the statements' text arrays take them."""
        return [d.decode() for d in self.data], [m.decode() for m in self.metadata]


def _chain(
    c: _Columns, heads_rows: list[tuple[Any, ...]]
) -> tuple[datetime, list[int], list[bytes], list[bytes]]:
    """From _HEADS_SQL's rows: the transaction's now() and each event's version, previous
    hash and hash, chained as the single-event statement chains them. ConcurrencyError
    when a stream is not at its expected version."""
    now = heads_rows[0][0]
    heads = {row[1]: (row[2] or 0, row[3] or GENESIS_HASH) for row in heads_rows}
    for stream, wanted in zip(c.streams, c.expected, strict=True):
        actual = heads[stream][0]
        if not at_expected(wanted, actual):
            raise ConcurrencyError(stream, wanted, actual)
    recorded = micros(now)
    versions, prevs, hashes = [], [], []
    for stream, digest in zip(c.stream_ids, c.digests, strict=True):
        version, prev = heads[stream]
        version += 1
        event_hash = chain_hash(prev, version, recorded, digest)
        heads[stream] = (version, event_hash)
        versions.append(version)
        prevs.append(prev)
        hashes.append(event_hash)
    return now, versions, prevs, hashes


async def _copy_events(
    conn: psycopg.AsyncConnection[Any], c: _Columns, now: datetime,
    versions: list[int], prevs: list[bytes], hashes: list[bytes],
) -> tuple[Any, list[int]]:  # fmt: skip
    """COPY the events in at positions drawn first: the transaction id and the positions."""
    cur = conn.cursor()
    await cur.execute(_POSITIONS_SQL, (len(c.event_ids),))
    drawn = await cur.fetchone()
    assert drawn is not None
    txid, positions = drawn
    async with cur.copy(_COPY_SQL) as copy:
        copy.set_types(_COPY_TYPES)
        category = {stream: category_of(stream) for stream in c.streams}
        for values in zip(
            positions, c.event_ids, c.stream_ids, [category[s] for s in c.stream_ids], versions,
            c.types, c.schema_versions, [now] * len(versions), c.data, c.metadata, prevs, hashes,
            strict=True,
        ):  # fmt: skip
            await copy.write_row(values)
    return txid, positions


async def _version(conn: psycopg.AsyncConnection[Any], stream_id: str) -> int:
    cur = await conn.execute(
        "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = %s", (stream_id,)
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


class EventStore:
    """Append-only event store over an async psycopg pool (autocommit connections)."""

    def __init__(self, pool: AsyncConnectionPool, *, notify: bool = True) -> None:
        self.pool = pool
        self.notifier = AppendNotifier(pool) if notify else None
        self._heads = _Heads()

    async def append(
        self,
        appends: Sequence[StreamAppend],
        *,
        idempotency: Idempotency | Sequence[Idempotency] | None = None,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> AppendResult:
        """Append atomically to every stream in `appends`, each at its expected version.

        Raises ConcurrencyError when any stream is elsewhere; then nothing is appended.
        With one idempotency key already used, returns the first result (`duplicate`);
        with several, raises DuplicateKey. With `conn`, the append joins that connection's
        open transaction.
        """
        keys = (
            [] if idempotency is None
            else [idempotency] if isinstance(idempotency, Idempotency)
            else list(idempotency)
        )  # fmt: skip
        # One event under at most one key, the hot path: one statement, no lists. Outside
        # a caller's transaction it may carry the relay's hint (see AppendNotifier).
        one = len(appends) == 1 and len(appends[0].events) == 1 and len(keys) <= 1
        columns = None if one else _Columns.of(appends)
        # One event a stream (several streams): one statement too.
        each = columns is not None and len(columns.event_ids) == len(columns.streams)
        notifier, metrics = self.notifier, APPEND_METRICS
        hint = (one or each) and conn is None and notifier is not None and notifier.claim()
        started = time.perf_counter()
        try:
            if columns is None:
                result = await self._append_one(appends[0], keys[0] if keys else None, hint, conn)
            elif each:
                result = await self._append_each(columns, keys, hint, conn)
            else:
                result = await self._append_many(columns, keys, conn)
        except psycopg.Error as e:
            metrics.observe(time.perf_counter() - started)
            if hint and notifier is not None:
                notifier.poke()  # the hint it claimed did not go out
            streams = [a.stream_id for a in appends]
            expected = [a.expected for a in appends]
            conflict = _conflict(e, streams, expected)
            if conflict is not None:
                metrics.outcomes["conflict"] += 1
                if e.sqlstate == "23505" and conn is None:
                    # The index names the version we collided with; say where it is now.
                    actual = await self.version_of(conflict.stream_id)
                    conflict = ConcurrencyError(conflict.stream_id, conflict.expected, actual)
                raise conflict from e
            if e.sqlstate == "23505" and e.diag.constraint_name == "idempotency_keys_pkey":
                if len(keys) > 1:
                    metrics.outcomes["duplicate"] += 1
                    raise DuplicateKey(str(e)) from e
                stored = await self.find_idempotent(keys[0].scope, keys[0].key)
                if stored is not None:
                    metrics.outcomes["duplicate"] += 1
                    return stored
            metrics.outcomes["failed"] += 1
            raise StoreUnavailable(str(e)) from e
        except BaseException:
            if hint and notifier is not None:
                notifier.poke()  # cancelled, say: the hint may not have gone out
            raise
        metrics.observe(time.perf_counter() - started)
        if result.duplicate:
            metrics.outcomes["duplicate"] += 1
        else:
            metrics.outcomes["ok"] += 1
            metrics.events += 1 if columns is None else len(columns.event_ids)
            if notifier is not None and not hint:
                notifier.poke()
        return result

    async def _append_one(
        self,
        append: StreamAppend,
        idem: Idempotency | None,
        hint: bool,
        given: psycopg.AsyncConnection[Any] | None,
    ) -> AppendResult:
        stream, expected, e = append.stream_id, append.expected, append.events[0]
        digest = content_digest(e.event_id, stream, e.type, e.schema_version, e.data, e.metadata)
        # Outside a caller's transaction, a head this store knows is not looked up.
        prev = None if given is not None else self._heads.previous(stream, expected)
        params: tuple[Any, ...] = (
            e.event_id, stream, expected if prev is None else expected + 1, e.type,
            e.schema_version, e.data.decode(), e.metadata.decode(), digest,
        )  # fmt: skip
        if prev is not None:
            params += (prev,)
        if idem is not None:
            params += (idem.scope, idem.key, idem.request_hash, idem.response.decode())
        try:
            row = await self._one_row(
                _APPEND_ONE[prev is not None, idem is not None, hint], params, given
            )
        except psycopg.Error:
            self._heads.forget(stream)
            raise
        if row is None:
            actual = await (self.version_of(stream) if given is None else _version(given, stream))
            raise ConcurrencyError(stream, expected, actual)
        if given is None:
            self._heads.record(stream, row[2], row[4])
        return AppendResult(row[0], [row[1]], [row[2]], row[3])

    async def _one_row(
        self, query: str, params: tuple[Any, ...], given: psycopg.AsyncConnection[Any] | None
    ) -> tuple[Any, ...] | None:
        """The row a prepared statement returns, on `given` or a pool connection. The hot
        path: getconn/putconn, not pool.connection(), whose wrapper also commits the
        connection (autocommit, so idle) under its lock on the way out, for half a
        checkout's CPU; putconn still rolls back or discards a connection left in a
        transaction or broken. On a pool connection (autocommit, idle) the statement goes
        through libpq below psycopg's cursor (infra.pipeline.one_row: 172 against 278 us
        of client CPU a statement on session 10's machine)."""
        if given is not None:
            cur = await given.execute(query, params, prepare=True)
            return await cur.fetchone()
        conn = await self.pool.getconn()
        try:
            return await one_row(conn, query, params)
        finally:
            await self.pool.putconn(conn)

    async def _append_each(
        self, c: _Columns, keys: list[Idempotency], hint: bool,
        given: psycopg.AsyncConnection[Any] | None,
    ) -> AppendResult:  # fmt: skip
        params: tuple[Any, ...] = (
            c.event_ids, c.stream_ids, c.expected, c.types, c.schema_versions, *c.json_texts(),
            c.digests,
        )  # fmt: skip
        if keys:
            params += _idempotency_params(keys, len(c.event_ids))
        row = await self._one_row(_INSERT_EACH[bool(keys), hint], params, given)
        assert row is not None
        txid, positions, now, heads = row[:4]
        if positions is None:
            for stream, wanted, actual in zip(c.streams, c.expected, heads, strict=True):
                if not at_expected(wanted, actual):
                    raise ConcurrencyError(stream, wanted, actual)
        versions = [head + 1 for head in heads]
        return AppendResult(
            txid=txid, positions=list(positions), versions=versions, recorded_at=now
        )

    async def _append_many(
        self, c: _Columns, keys: list[Idempotency], given: psycopg.AsyncConnection[Any] | None
    ) -> AppendResult:
        # COPY cannot run in a caller's pipeline: there, the INSERT.
        copy = len(c.event_ids) >= COPY_FROM and (
            given is None or given.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
        )
        async with (
            self._connection(given) as conn,
            contextlib.nullcontext() if copy else conn.pipeline(),
            conn.transaction(),
        ):
            cur = await conn.execute(_HEADS_SQL, (c.streams,))
            now, versions, prevs, hashes = _chain(c, await cur.fetchall())
            if copy:
                txid, positions = await _copy_events(conn, c, now, versions, prevs, hashes)
                if keys:
                    *idem, ordinals = _idempotency_params(keys, len(c.event_ids))
                    at = [positions[n - 1] for n in ordinals]
                    await conn.execute(_IDEM_KEYS_SQL, (*idem, at))
            else:
                params: tuple[Any, ...] = (
                    c.event_ids, c.stream_ids, versions, c.types, c.schema_versions,
                    *c.json_texts(), prevs, hashes,
                )  # fmt: skip
                if keys:
                    params += _idempotency_params(keys, len(c.event_ids))
                cur = await conn.execute(_INSERT_MANY[bool(keys)], params)
                row = await cur.fetchone()
                assert row is not None
                txid, positions = row
        return AppendResult(
            txid=txid, positions=list(positions), versions=versions, recorded_at=now
        )

    @contextlib.asynccontextmanager
    async def _connection(
        self, given: psycopg.AsyncConnection[Any] | None
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if given is not None:
            yield given
        else:
            async with self.pool.connection() as conn:
                yield conn

    async def version_of(self, stream_id: str) -> int:
        """How many events the stream has (0: it does not exist)."""
        async with self.pool.connection() as conn:
            return await _version(conn, stream_id)

    async def find_idempotent(self, scope: str, key: str) -> AppendResult | None:
        """The first result recorded under an idempotency key, if the key was used."""
        return (await self.find_idempotent_many([(scope, key)])).get((scope, key))

    async def find_idempotent_many(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], AppendResult]:
        """The first results recorded under those of the (scope, key) pairs that were used."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT k.scope, k.key, k.txid, k.position, k.created_at, k.request_hash,"
                " k.response FROM idempotency_keys AS k"
                " JOIN unnest(%s::text[], %s::text[]) AS w(scope, key)"
                " ON k.scope = w.scope AND k.key = w.key",
                ([s for s, _ in keys], [k for _, k in keys]),
                prepare=True,
            )
            rows = await cur.fetchall()
        return {
            (scope, key): AppendResult(
                txid=txid,
                positions=[position] if position is not None else [],
                versions=[],
                recorded_at=created_at,
                duplicate=True,
                stored_hash=request_hash,
                stored_response=response.encode(),
            )
            for scope, key, txid, position, created_at, request_hash, response in rows
        }

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """A stream's events from `from_version` on (or down from it, backwards); by default
        from the first event (backwards: from the last)."""
        op, order = ("<=", "DESC") if backwards else (">=", "ASC")
        if from_version is None:
            from_version = 2**62 if backwards else 1
        sql = (
            f"SELECT {COLUMNS} FROM events WHERE stream_id = %s AND stream_version {op} %s"
            f" ORDER BY stream_version {order}"
        )
        params: list[Any] = [stream_id, from_version]
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql, params, binary=True)
            rows = await cur.fetchall()
        return list(starmap(RecordedEvent, rows))

    async def _select_log(
        self, columns: str, after: Position, limit: int, where: Selection
    ) -> list[tuple[Any, ...]]:
        sql, params = _log_query(after, limit, where, columns)
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql, params, prepare=True, binary=True)
            return await cur.fetchall()

    async def read_all(
        self, after: Position = ORIGIN, *, limit: int = 1000, where: Selection = EVERYTHING
    ) -> list[RecordedEvent]:
        """Up to `limit` events after `after` (of the part `where` selects), in commit-safe
        order."""
        rows = await self._select_log(COLUMNS, after, limit, where)
        return list(starmap(RecordedEvent, rows))

    async def read_envelopes(
        self, after: Position = ORIGIN, *, limit: int = 1000, where: Selection = EVERYTHING
    ) -> list[Envelope]:
        """What read_all reads, as the contract's envelopes (for readers that only pass
        them on, such as the audit export)."""
        rows = await self._select_log(ENVELOPE_COLUMNS, after, limit, where)
        return [_envelope(r) for r in rows]

    async def iter_all(
        self, after: Position = ORIGIN, *, batch: int = 5000, where: Selection = EVERYTHING
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Batches of the log after `after` (of the part `where` selects), in constant
        memory."""
        while events := await self.read_all(after, limit=batch, where=where):
            yield events
            after = events[-1].at

    async def iter_stream(
        self, stream_id: str, *, batch: int = 5000
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Batches of one stream's events from its first, in constant memory."""
        version = 1
        while events := await self.read_stream(stream_id, from_version=version, limit=batch):
            yield events
            if len(events) < batch:
                return
            version = events[-1].stream_version + 1

    async def head(self) -> Position:
        """The last event a commit-safe reader can see now."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT txid, position FROM events WHERE {COMMIT_SAFE}"
                " ORDER BY txid DESC, position DESC LIMIT 1"
            )
            row = await cur.fetchone()
        return Position(row[0], row[1]) if row else ORIGIN
