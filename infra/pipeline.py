"""Statements sent to PostgreSQL through libpq's pipeline mode, below psycopg's cursors: a
projection batch's in one write, their results read in one pass; an append's one row.

psycopg's pipeline sends and polls at every `execute`: a batch of eight statements cost the
projector 0.9-1.05 ms of CPU on session 10's machine, against 0.16 ms through libpq with
one flush (`docs/SCALING.md`). A batch only writes: nothing in it reads a result. So the
statements are converted by psycopg (its adapters, its placeholders, prepared once per
connection) and queued, then sent together in libpq's pipeline mode with one sync, and
the results are checked in order. The first error is raised as psycopg raises it (its
SQLSTATE class), and the server skipped everything after it, as it does in any pipeline.

A single statement pays psycopg's cursor too: 278 us of client CPU for a one-row INSERT
... RETURNING against 172 us this way (`one_row`), on the same machine.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, Final

import psycopg
from psycopg import errors, pq
from psycopg._queries import PostgresQuery
from psycopg.abc import Buffer, Params, Query
from psycopg.adapt import Transformer


class _Prepared:
    """The statements this module prepared on one connection, by their text and parameter
    types. Names are never reused on a connection. A batch only sends the projections'
    own statements (a bounded set); past the cap, the rest go unprepared rather than grow
    the server's memory."""

    __slots__ = ("count", "names")

    def __init__(self) -> None:
        self.names: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self.count = 0


_PREPARED: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], _Prepared] = (
    weakref.WeakKeyDictionary()
)
MAX_PREPARED: Final = 200


class _Queued:
    __slots__ = ("formats", "params", "prepare", "query", "types")

    def __init__(self, pgq: PostgresQuery, prepare: bool) -> None:
        self.prepare = prepare
        self.query = pgq.query
        self.params: Sequence[Buffer | None] | None = pgq.params
        self.types = pgq.types
        self.formats: Sequence[pq.Format] | None = pgq.formats


class Statements:
    """What a projection's `apply` writes with: `execute` and `executemany` queue statements,
    `send` sends them all (the runtime does, once a batch is queued)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self._tx = Transformer.from_context(conn)
        self._queue: list[_Queued] = []

    async def execute(
        self, query: Query, params: Params | None = None, *, prepare: bool = True
    ) -> None:
        """Queue one execution of `query` (psycopg's placeholders and adapters), prepared on
        the connection unless `prepare` is False (transaction control, which must run even
        when the connection lost its prepared statements)."""
        pgq = PostgresQuery(self._tx)
        pgq.convert(query, params)
        self._queue.append(_Queued(pgq, prepare))

    async def executemany(self, query: Query, params_seq: Iterable[Params]) -> None:
        """Queue one execution of `query` for each parameter set."""
        for params in params_seq:
            await self.execute(query, params)

    def first_row(self, result: pq.abc.PGresult) -> tuple[Any, ...]:
        """The first row of a result `send` returned, loaded as psycopg loads it."""
        self._tx.set_pgresult(result)
        row: tuple[Any, ...] = self._tx.load_row(0, tuple)
        return row

    def __len__(self) -> int:
        return len(self._queue)

    async def send(
        self, *, retry: bool = False, undo: Query | None = None
    ) -> pq.abc.PGresult | None:
        """Send every queued statement, in order, with one sync; raise the first error, or
        return the last statement's result.

        The connection must be idle or in a transaction, outside any pipeline. If this is
        interrupted (cancelled, the connection lost) before every result is read, the
        connection is closed: half-read, it is of no use to anyone, and the pool drops it.

        Our prepared statements vanish when psycopg runs a ROLLBACK, a DROP or an ALTER on
        the connection (it then sends DEALLOCATE ALL). With `retry`, the batch then goes
        again once, prepared afresh, after `undo` if given: the statement that undoes the
        failed attempt (ROLLBACK, or ROLLBACK TO SAVEPOINT; none for one statement outside
        a transaction, which did nothing). Without it, the error is raised.
        """
        queue, self._queue = self._queue, []
        if not queue:
            return None
        prepared = _PREPARED.get(self.conn)
        if prepared is None:
            prepared = _PREPARED[self.conn] = _Prepared()
        try:
            return await self._send(queue, prepared)
        except errors.InvalidSqlStatementName:
            prepared.names.clear()
            if not retry:
                raise
            if undo is not None:
                await self.execute(undo, prepare=False)
            first, self._queue = self._queue, []
            return await self._send(first + queue, prepared)

    async def _send(self, queue: list[_Queued], prepared: _Prepared) -> pq.abc.PGresult | None:
        conn, pg = self.conn, self.conn.pgconn
        # Commands in the order sent; a Parse sent here is at its index in `parses`.
        parses: dict[int, tuple[tuple[bytes, tuple[int, ...]], bytes]] = {}
        naming: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        commands = 0
        pg.enter_pipeline_mode()
        statuses: list[pq.ExecStatus] = []
        try:
            for q in queue:
                key = (q.query, q.types)
                name = (prepared.names.get(key) or naming.get(key)) if q.prepare else None
                if name is None and q.prepare and len(prepared.names) + len(naming) < MAX_PREPARED:
                    name = naming[key] = b"_hb_%d" % prepared.count
                    prepared.count += 1
                    pg.send_prepare(name, q.query, param_types=q.types)
                    parses[commands] = (key, name)
                    commands += 1
                if name is not None:
                    pg.send_query_prepared(name, q.params, param_formats=q.formats)
                else:
                    pg.send_query_params(
                        q.query, q.params, param_types=q.types, param_formats=q.formats
                    )
                commands += 1
            pg.pipeline_sync()
            failed, last = await _results(pg, statuses)
        except BaseException:
            pg.finish()
            raise
        pg.exit_pipeline_mode()
        # A Parse the server skipped (after a failure) prepared nothing: it is sent again
        # next time, under a new name (names are never reused on a connection).
        for index, (key, name) in parses.items():
            if statuses[index] == pq.ExecStatus.COMMAND_OK:
                prepared.names[key] = name
        if failed is not None:
            raise errors.error_from_result(failed, encoding=conn.info.encoding)
        return last


async def one_row(
    conn: psycopg.AsyncConnection[Any], query: Query, params: Params | None
) -> tuple[Any, ...] | None:
    """The first row that one statement returns (None when it returns none), on a connection
    idle outside any transaction: the statement is its own transaction, prepared once per
    connection. Raises psycopg's error."""
    statements = Statements(conn)
    await statements.execute(query, params)
    result = await statements.send(retry=True)
    if result is None or result.ntuples == 0:
        return None
    return statements.first_row(result)


async def _results(
    pg: pq.abc.PGconn, statuses: list[pq.ExecStatus]
) -> tuple[pq.abc.PGresult | None, pq.abc.PGresult | None]:
    """Flush, then read every command's result up to the sync, its status into `statuses`;
    the first failed result, if any, and the last one."""
    loop = asyncio.get_running_loop()
    failed = last = None
    while pg.flush() != 0:  # the socket's buffer is full: wait until it takes more
        await _ready(loop, pg.socket, write=True)
        pg.consume_input()  # what the server sent meanwhile, if anything
    while True:
        while pg.is_busy():
            await _ready(loop, pg.socket, write=False)
            pg.consume_input()
        result = pg.get_result()
        if result is None:
            continue  # the end of one command's results
        status = pq.ExecStatus(result.status)
        if status == pq.ExecStatus.PIPELINE_SYNC:
            break
        statuses.append(status)
        last = result
        if status == pq.ExecStatus.FATAL_ERROR and failed is None:
            failed = result
    while (notify := pg.notifies()) is not None:
        if pg.notify_handler is not None:
            pg.notify_handler(notify)
    return failed, last


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    """Until the socket is readable, or (with `write`) writable: a server whose own output
    is full waits for us to read before it reads more of what we send."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    if write:
        loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
        if write:
            loop.remove_writer(fd)
