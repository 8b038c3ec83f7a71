"""Statements through libpq's pipeline mode (infra.pipeline), against a real PostgreSQL: a
projection batch's, queued and sent in one write, and an append's one row. Order kept,
statements prepared once, the first error raised as psycopg raises it with nothing after
it applied, statements deallocated behind our back prepared again, and a connection
interrupted mid-read closed rather than handed back half-read."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from infra.pipeline import Statements, one_row

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _table(conn: psycopg.AsyncConnection[Any], name: str) -> None:
    await conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v text NOT NULL)")


async def _rows(conn: psycopg.AsyncConnection[Any], name: str) -> list[tuple[Any, ...]]:
    cur = await conn.execute(f"SELECT id, v FROM {name} ORDER BY id")
    return await cur.fetchall()


async def _prepared(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    cur = await conn.execute(
        "SELECT name FROM pg_prepared_statements WHERE name LIKE '\\_hb\\_%' ORDER BY name"
    )
    return [row[0] for row in await cur.fetchall()]


async def _transaction(
    conn: psycopg.AsyncConnection[Any], *queued: tuple[str, tuple[Any, ...]]
) -> Statements:
    """BEGIN, the statements and COMMIT, queued (not sent)."""
    s = Statements(conn)
    await s.execute(b"BEGIN")
    for query, params in queued:
        await s.execute(query, params)
    await s.execute(b"COMMIT")
    return s


async def test_statements_run_in_order_and_are_prepared_once(pool: AsyncConnectionPool) -> None:
    async with pool.connection() as conn:
        await _table(conn, "st_order")
        for round_ in range(3):
            s = Statements(conn)
            await s.execute(b"BEGIN")
            await s.execute("INSERT INTO st_order VALUES (%s, %s)", (round_, "new"))
            await s.execute("UPDATE st_order SET v = %s WHERE id = %s", ("updated", round_))
            await s.executemany(
                "INSERT INTO st_order VALUES (%s, %s)",
                [(100 + round_ * 2 + i, "many") for i in range(2)],
            )
            await s.execute(b"COMMIT")
            assert len(s) == 6  # executemany queued one execution a row
            await s.send()
            assert len(s) == 0
        # The update ran after its insert, every round.
        assert await _rows(conn, "st_order") == [
            (0, "updated"), (1, "updated"), (2, "updated"),
            (100, "many"), (101, "many"), (102, "many"), (103, "many"), (104, "many"), (105, "many"),
        ]  # fmt: skip
        # Four distinct statements (BEGIN, the insert, the update, COMMIT), each prepared in
        # the first round and reused after.
        assert len(await _prepared(conn)) == 4
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


async def test_the_first_error_is_raised_and_nothing_after_it_applies(
    pool: AsyncConnectionPool,
) -> None:
    async with pool.connection() as conn:
        await _table(conn, "st_fail")
        await conn.execute("INSERT INTO st_fail VALUES (1, 'first')")
        s = await _transaction(
            conn,
            ("INSERT INTO st_fail VALUES (%s, %s)", (2, "before")),
            ("INSERT INTO st_fail VALUES (%s, %s)", (1, "duplicate")),
            ("SELECT hubbub_require(false, 'never reached')", ()),  # never prepared
            ("INSERT INTO st_fail VALUES (%s, %s)", (3, "after")),
        )
        with pytest.raises(errors.UniqueViolation) as failed:
            await s.send()
        assert failed.value.diag.constraint_name == "st_fail_pkey"
        # The server skipped the rest, COMMIT too: the transaction is aborted.
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        await conn.execute("ROLLBACK")
        assert await _rows(conn, "st_fail") == [(1, "first")]
        # Statements the server skipped were not prepared: the next batch prepares them
        # afresh and runs them (here the precondition, which now fails as HB001).
        again = await _transaction(conn, ("SELECT hubbub_require(false, 'never reached')", ()))
        with pytest.raises(psycopg.Error) as refused:
            await again.send()
        assert refused.value.sqlstate == "HB001"
        await conn.execute("ROLLBACK")
        ok = Statements(conn)
        await ok.execute("INSERT INTO st_fail VALUES (%s, %s)", (3, "after"))
        await ok.send()
        assert await _rows(conn, "st_fail") == [(1, "first"), (3, "after")]


async def test_a_batch_larger_than_the_socket_buffers_goes_through(
    pool: AsyncConnectionPool,
) -> None:
    async with pool.connection() as conn:
        await _table(conn, "st_large")
        # Some 10 MB of parameters: many writes, with results coming back meanwhile.
        rows = [("INSERT INTO st_large VALUES (%s, %s)", (i, "x" * 2000)) for i in range(5000)]
        await (await _transaction(conn, *rows)).send()
        cur = await conn.execute("SELECT count(*), sum(length(v)) FROM st_large")
        assert await cur.fetchone() == (5000, 10_000_000)


async def test_a_batch_whose_results_fill_the_socket_while_it_is_sent_goes_through(
    pool: AsyncConnectionPool,
) -> None:
    """The server stops reading while its results wait for us: sending and reading must
    interleave (libpq reads while it flushes, and the wait wakes on either)."""
    async with pool.connection() as conn:
        s = Statements(conn)
        # About 8 MB each way: more than the sockets' buffers hold.
        await s.executemany("SELECT length(%s), repeat('y', 40000)", [("x" * 40000,)] * 200)
        result = await asyncio.wait_for(s.send(), 60)
        assert result is not None and result.ntuples == 1


async def test_a_send_cancelled_midway_closes_its_connection(pool: AsyncConnectionPool) -> None:
    async with pool.connection() as conn:
        await _table(conn, "st_cancel")
    async with pool.connection() as conn:
        s = await _transaction(
            conn,
            ("INSERT INTO st_cancel VALUES (%s, %s)", (1, "never")),
            ("SELECT pg_sleep(2)", ()),
        )
        sending = asyncio.create_task(s.send())
        await asyncio.sleep(0.3)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        assert conn.closed  # the pool drops it instead of lending it out half-read
    async with pool.connection() as conn:
        assert await _rows(conn, "st_cancel") == []


async def test_statements_deallocated_behind_its_back_are_prepared_again(
    pool: AsyncConnectionPool,
) -> None:
    async with pool.connection() as conn:
        await _table(conn, "st_dealloc")
        first = Statements(conn)
        await first.execute("INSERT INTO st_dealloc VALUES (%s, %s)", (1, "one"))
        await first.send()
        # What psycopg sends after a ROLLBACK, DROP or ALTER it ran here.
        await conn.execute("DEALLOCATE ALL")
        lost = Statements(conn)
        await lost.execute("INSERT INTO st_dealloc VALUES (%s, %s)", (2, "two"))
        with pytest.raises(errors.InvalidSqlStatementName):
            await lost.send()  # nothing says how to undo a failed attempt: no second one
        again = Statements(conn)
        await again.execute("INSERT INTO st_dealloc VALUES (%s, %s)", (2, "two"))
        await again.send()  # prepared afresh
        await conn.execute("DEALLOCATE ALL")
        retried = await _transaction(conn, ("INSERT INTO st_dealloc VALUES (%s, %s)", (3, "three")))
        await retried.send(retry=True, undo=b"ROLLBACK")  # fails, undoes, goes again
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert await _rows(conn, "st_dealloc") == [(1, "one"), (2, "two"), (3, "three")]


async def test_one_row_returns_the_row_loaded_as_psycopg_loads_it(
    pool: AsyncConnectionPool,
) -> None:
    async with pool.connection() as conn:
        await _table(conn, "st_one")
        for i in range(3):
            row = await one_row(
                conn,
                "INSERT INTO st_one VALUES (%s, %s) RETURNING id, v, pg_current_xact_id(), now()",
                (i, f"v{i}"),
            )
            assert row is not None
            assert row[:2] == (i, f"v{i}")
            assert isinstance(row[2], int)  # xid8, by Hubbub's loaders (infra.db)
            assert isinstance(row[3], datetime)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # committed
        none = await one_row(
            conn, "INSERT INTO st_one SELECT %s, %s WHERE false RETURNING id", (9, "never")
        )
        assert none is None
        assert len(await _prepared(conn)) == 2  # each statement prepared once


async def test_one_row_raises_psycopgs_error_and_survives_deallocate_all(
    pool: AsyncConnectionPool,
) -> None:
    async with pool.connection() as conn:
        await _table(conn, "st_one_err")
        insert = "INSERT INTO st_one_err VALUES (%s, %s) RETURNING id"
        assert await one_row(conn, insert, (1, "one")) == (1,)
        with pytest.raises(errors.UniqueViolation) as failed:
            await one_row(conn, insert, (1, "again"))
        assert failed.value.diag.constraint_name == "st_one_err_pkey"
        assert "(id)=(1)" in (failed.value.diag.message_detail or "")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        await conn.execute("DEALLOCATE ALL")  # as psycopg does after a ROLLBACK it ran
        assert await one_row(conn, insert, (2, "two")) == (2,)  # prepared afresh, once
        assert await _rows(conn, "st_one_err") == [(1, "one"), (2, "two")]
