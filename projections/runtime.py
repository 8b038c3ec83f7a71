"""The projection runtime: what a projection is, and applying batches effectively once.

A projection is a module with a name, the event types it reads, DDL for its tables, and an
`apply` function. Its tables live in their own PostgreSQL schema (`rm_<name>`) together
with its checkpoint, so that rows and checkpoint always change in one transaction, and a
blue-green rebuild can build a whole fresh schema and swap it in by renaming.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from events.envelope import ORIGIN, Envelope, Position
from infra.pipeline import Statements
from infra.store import PROJECTION_CHANNEL, RecordedEvent
from infra.vault import KeyCache, open_envelopes


class Projection(Protocol):
    """A read model: tables, and how events change them."""

    name: str
    types: frozenset[str]
    # Bump when the tables or what apply() writes change: the projector then rebuilds the
    # read model blue-green at start, and `projections status` calls it stale until then.
    version: int

    def ddl(self, schema: str) -> list[str]:
        """CREATE statements for the projection's tables in `schema` (not the checkpoint)."""
        ...

    async def apply(self, conn: Statements, schema: str, events: Sequence[Envelope]) -> None:
        """Queue what applying events (only of `types`, in commit-safe order) writes, in the
        caller's transaction. Statements only: nothing is sent before the batch is whole,
        so no result can be read."""
        ...

    # Optionally, `announce(conn, schema, after, upto, events)`: queue a notification of
    # what the batch of `events` events spanning `after` to `upto` wrote, after its rows
    # (the feed tells the gateways its frames). apply_together calls it when it notifies,
    # unless told not to announce.


def live_schema(name: str) -> str:
    return f"rm_{name}"


def next_schema(name: str) -> str:
    return f"rm_{name}__next"


def old_schema(name: str) -> str:
    return f"rm_{name}__old"


def notified(payload: str) -> tuple[list[str], str]:
    """The projections and the position token a `hubbub_projection` notification names."""
    names, _, token = payload.rpartition(":")
    return names.split(","), token


class CheckpointMoved(RuntimeError):
    """Another process (a second projector, or a rebuild's swap) advanced the checkpoint."""

    def __init__(self, actual: Position) -> None:
        super().__init__(f"checkpoint is at {actual.token()}")
        self.actual = actual


@dataclass(frozen=True)
class Applied:
    """The outcome of one applied batch."""

    position: Position
    events: int


def envelope_of(event: RecordedEvent | Envelope) -> Envelope:
    return event if isinstance(event, Envelope) else event.envelope()


async def create_schema(
    conn: psycopg.AsyncConnection[Any], projection: Projection, schema: str
) -> None:
    """Create `schema` with the projection's tables and a checkpoint at the origin."""
    ident = sql.Identifier(schema)
    await conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
    await conn.execute(
        sql.SQL(
            "CREATE TABLE {}.checkpoint (id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),"
            " txid xid8 NOT NULL, position bigint NOT NULL, version integer NOT NULL,"
            " updated_at timestamptz NOT NULL DEFAULT now())"
        ).format(ident)
    )
    await conn.execute(
        sql.SQL("INSERT INTO {}.checkpoint (txid, position, version) VALUES ('0', 0, %s)").format(
            ident
        ),
        (projection.version,),
    )
    for statement in projection.ddl(schema):
        await conn.execute(statement.encode())  # DDL from our own modules, not user input


async def schema_version(conn: psycopg.AsyncConnection[Any], schema: str) -> int:
    """The projection version a read-model schema was built by (0: before versions)."""
    try:
        cur = await conn.execute(
            sql.SQL("SELECT version FROM {}.checkpoint WHERE id = 1").format(sql.Identifier(schema))
        )
    except psycopg.errors.UndefinedColumn:
        return 0
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def ensure_schema(conn: psycopg.AsyncConnection[Any], projection: Projection) -> bool:
    """Create the live schema if it is missing; True when it was created."""
    async with conn.transaction():
        # Two processes starting at once must not both create it.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 7232))", (projection.name,)
        )
        cur = await conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (live_schema(projection.name),)
        )
        if await cur.fetchone():
            return False
        await create_schema(conn, projection, live_schema(projection.name))
        return True


async def read_checkpoint(
    conn: psycopg.AsyncConnection[Any], schema: str, *, lock: bool = False
) -> Position:
    query = sql.SQL("SELECT txid, position FROM {}.checkpoint WHERE id = 1{}").format(
        sql.Identifier(schema), sql.SQL(" FOR UPDATE" if lock else "")
    )
    cur = await conn.execute(query)
    row = await cur.fetchone()
    return Position(row[0], row[1]) if row else ORIGIN


async def apply_batch(
    conn: psycopg.AsyncConnection[Any],
    projection: Projection,
    schema: str,
    expected: Position,
    events: Sequence[RecordedEvent | Envelope],
    upto: Position,
    *,
    notify: bool = True,
    announce: bool = True,
) -> Applied:
    """Apply `events` and move the checkpoint from `expected` to `upto`, in one transaction.

    `events` are everything in the log between the two positions (the runner checked
    there is no gap); those of types the projection does not read are skipped, but the
    checkpoint still passes them. Raises CheckpointMoved when the checkpoint is not at
    `expected`: the caller reloads it and decides again.
    """
    try:
        await apply_together(
            conn,
            [Batch(projection, schema, expected, events, upto)],
            notify=notify,
            announce=announce,
        )
    except psycopg.Error as e:
        if e.sqlstate != "HB001":
            raise
        raise CheckpointMoved(await read_checkpoint(conn, schema)) from None
    return Applied(upto, len(events))


@dataclass(frozen=True)
class Batch:
    """One projection's share of a batch: its events from `expected` up to `upto`."""

    projection: Projection
    schema: str
    expected: Position
    events: Sequence[RecordedEvent | Envelope]
    upto: Position


# A batch's transaction control (begin, end, undo): its own transaction, or a savepoint in
# the caller's.
_OWN: Final = (b"BEGIN", b"COMMIT", b"ROLLBACK")
_NESTED: Final = (
    b"SAVEPOINT hubbub_batch", b"RELEASE SAVEPOINT hubbub_batch",
    b"ROLLBACK TO SAVEPOINT hubbub_batch",
)  # fmt: skip


async def apply_together(
    conn: psycopg.AsyncConnection[Any],
    batches: Sequence[Batch],
    *,
    notify: bool = True,
    announce: bool = True,
) -> None:
    """Apply several projections' batches in one transaction: one pipelined round trip and
    one commit for all of them, rather than one each. Raises psycopg's error (HB001 when a
    checkpoint was not where expected) and then nothing was applied.

    Projections receive events with their personal fields opened (infra.vault): clear text
    while the subject's key lives, `ERASED` once it is destroyed."""
    wanted = [[e for e in b.events if e.type in b.projection.types] for b in batches]
    opened = await _opened(conn, wanted)
    claim, params = _claim(conn, batches, notify=notify)
    # The whole transaction, BEGIN to COMMIT, is queued and then sent in one write with one
    # sync (infra.pipeline): one round trip. In a caller's transaction (a rebuild's last
    # catch-up and its swap) the batch joins it under a savepoint instead, and commits or
    # rolls back with it. The undo statement lets the batch be sent again when the server
    # lost its prepared statements (Statements.send). A failure leaves the transaction
    # aborted (the server skips what follows it, COMMIT too): ours is rolled back here, a
    # caller's by the caller.
    own = conn.info.transaction_status == TransactionStatus.IDLE
    begin, end, undo = _OWN if own else _NESTED
    statements = Statements(conn)
    await statements.execute(begin, prepare=False)
    await statements.execute(claim, params)
    for b, envelopes in zip(batches, opened, strict=True):
        if envelopes:
            await b.projection.apply(statements, b.schema, envelopes)
    if notify and announce:
        for b in batches:
            if (announcer := getattr(b.projection, "announce", None)) is not None:
                await announcer(statements, b.schema, b.expected, b.upto, len(b.events))
    await statements.execute(end, prepare=False)
    try:
        await statements.send(retry=True, undo=undo)
    except BaseException:
        if own and not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                await conn.execute(b"ROLLBACK")
        raise


def _claim(
    conn: psycopg.AsyncConnection[Any], batches: Sequence[Batch], *, notify: bool
) -> tuple[bytes, list[Any]]:
    """The statement that opens a batch's transaction: it claims every checkpoint, turns
    off synchronous commit and queues the notifications, in one execution (a batch of a
    few events is mostly per-statement costs).

    - The claim moves a checkpoint only from where we expect it (a concurrent applier
      waits on that row, then finds it moved) and otherwise aborts the transaction: we
      learn the outcome from the commit.
    - Losing this commit in a crash is harmless: rows and checkpoints go together, and
      the events are applied again from the store. No need to wait for fsync.
    - One notification per position: "<name>,<name>,...:<token>" (listeners parse it with
      notified()); seven a batch cost the read API a sixth of its CPU. NOTIFY is
      transactional: it is only sent if the batch commits.
    """
    params: list[Any] = []
    for b in batches:
        params += [str(b.upto.txid), b.upto.position, str(b.expected.txid), b.expected.position]
    notices = sorted({b.upto for b in batches}) if notify else []
    for upto in notices:
        names = ",".join(b.projection.name for b in batches if b.upto == upto)
        params += [PROJECTION_CHANNEL, f"{names}:{upto.token()}"]
    key = (tuple(b.schema for b in batches), len(notices))
    statement = _CLAIMS.get(key)
    if statement is None:
        statement = _CLAIMS[key] = _claim_statement(*key).as_bytes(conn)
    return statement, params


# A batch's statements join a handful of rows (unnest) to tables by their keys: the right
# plan is index lookups in a nested loop whatever the tables' size. Fixed for the batch's
# transaction, so that a plan cached while a table was small (a fresh schema, a rebuild)
# cannot scan it whole once it has grown, and so that PostgreSQL keeps one generic plan
# per prepared statement instead of planning the feed's insert afresh every batch.
PLANNER_SETTINGS = (
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_seqscan", "off"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
)

# Claim statements as the server reads them, by (schemas, notifications): composing and
# quoting one costs more than executing it.
_CLAIMS: dict[tuple[tuple[str, ...], int], bytes] = {}


def _claim_statement(schemas: tuple[str, ...], notices: int) -> sql.Composed:
    ctes = [
        sql.SQL(
            "c{} AS (UPDATE {}.checkpoint SET txid = %s::xid8, position = %s,"
            " updated_at = now() WHERE id = 1 AND txid = %s::xid8 AND position = %s"
            " RETURNING 1)"
        ).format(sql.SQL(str(i)), sql.Identifier(schema))
        for i, schema in enumerate(schemas)
    ]
    claimed = sql.SQL(" + ").join(
        sql.SQL("(SELECT count(*) FROM c{})").format(sql.SQL(str(i))) for i in range(len(schemas))
    )
    selected = [
        sql.SQL("hubbub_require({} = {}, 'checkpoint moved')").format(
            claimed, sql.Literal(len(schemas))
        ),
        sql.SQL("set_config('synchronous_commit', 'off', true)"),
        *[
            sql.SQL("set_config({}, {}, true)").format(sql.Literal(k), sql.Literal(v))
            for k, v in PLANNER_SETTINGS
        ],
        *[sql.SQL("pg_notify(%s, %s)")] * notices,
    ]
    return sql.SQL("WITH {} SELECT {}").format(
        sql.SQL(", ").join(ctes), sql.SQL(", ").join(selected)
    )


# The keys this process has looked up: a batch of known authors needs no key query. It
# forgets a user's key as it passes their UserForgotten (see KeyCache for why that is
# sound; a projector that reads no UserForgotten reads no personal field into its rows).
_KEYS = KeyCache()


async def _opened(
    conn: psycopg.AsyncConnection[Any], wanted: list[list[RecordedEvent | Envelope]]
) -> list[Sequence[Envelope]]:
    """Each batch's envelopes, opened; an event several projections read is made an
    envelope and opened once (one key lookup for the whole batch, none when nothing in it
    is sealed)."""
    # The projections' lists hold the same objects: one envelope for each of them.
    unique = {id(e): e for batch in wanted for e in batch}
    opened = await open_envelopes(conn, [envelope_of(e) for e in unique.values()], _KEYS)
    by_id = dict(zip(unique, opened, strict=True))
    return [[by_id[id(e)] for e in batch] for batch in wanted]
