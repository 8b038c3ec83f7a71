"""A Bulk statement's columns (projections.batching.column): lists whose array type is
known from their values, so psycopg dumps them without scanning each for its element type.
They must reach PostgreSQL exactly as the plain lists psycopg types itself do."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from infra.pipeline import Statements
from projections.batching import column

pytestmark = pytest.mark.asyncio(loop_scope="session")

_UNNEST = (
    "SELECT * FROM unnest(%b::bool[], %b::bigint[], %b::text[], %b::uuid[], %b::uuid[],"
    " %b::timestamptz[], %b::timestamp[], %b::text[], %b::bytea[], %b::integer[])"
)


def _rows() -> list[tuple[Any, ...]]:
    now, naive = datetime.now(UTC), datetime(2026, 1, 2, 3, 4, 5)
    return [
        (True, 1, "a", uuid.uuid4(), str(uuid.uuid4()), now, naive, None, b"\x00x", 7),
        (False, 2**40, "é\u2028'\"{}", uuid.uuid4(), str(uuid.uuid4()), now, naive, None,
         b"y", 2**31 - 1),
        (None, -(2**63), None, None, None, None, None, None, None, None),
    ]  # fmt: skip


async def test_typed_columns_reach_postgresql_as_plain_lists_do(pool: AsyncConnectionPool) -> None:
    rows = _rows()
    typed = [column(values) for values in zip(*rows, strict=True)]
    # Typed where the values say which array they are; a naive datetime, bytes and a column
    # of nothing but None stay plain lists, typed by psycopg as before.
    assert [type(c).__name__ for c in typed] == [
        "BoolColumn", "Int8Column", "TextColumn", "UuidColumn", "TextColumn",
        "TimestamptzColumn", "list", "list", "list", "Int8Column",
    ]  # fmt: skip
    plain = [list(values) for values in zip(*rows, strict=True)]
    async with pool.connection() as conn:
        got_typed = await (await conn.execute(_UNNEST, typed)).fetchall()
        got_plain = await (await conn.execute(_UNNEST, plain)).fetchall()
        # and through the projector's own path (libpq's pipeline mode)
        statements = Statements(conn)
        await statements.execute(_UNNEST, typed)
        result = await statements.send()
        assert result is not None and result.ntuples == len(rows)
    expected = [(*r[:4], uuid.UUID(r[4]) if r[4] else None, *r[5:]) for r in rows]
    assert got_typed == got_plain == expected


async def test_a_value_of_another_type_in_a_typed_column_is_refused(
    pool: AsyncConnectionPool,
) -> None:
    # Typed by its first value, a column with a value of another type cannot be dumped:
    # an error, never a wrong value (psycopg refuses such a plain list too).
    async with pool.connection() as conn:
        for values in (("a", 1), (1, "a"), (1, 2.5)):
            with pytest.raises((TypeError, ValueError, psycopg.DataError)):
                await conn.execute("SELECT %b::text[]", [column(values)])
