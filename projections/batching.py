"""Statements of a projection batch, sent in order but as few executions as can be."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import pq, sql

from infra.pipeline import Statements


def _column_type(element: str) -> type[list[Any]]:
    """A list whose binary array dumper is psycopg's own for `element`'s array type, bound
    by oid. psycopg dumps a plain list by first scanning it for its element type (and, for
    ints, their largest magnitude), at every execution; a projector batch of a few events
    spent most of its parameter conversion on that (`docs/SCALING.md`, "Session 14")."""
    info = psycopg.adapters.types[element]
    column = type(f"{element.title()}Column", (list,), {"__slots__": ()})
    dumper = psycopg.adapters.get_dumper_by_oid(info.array_oid, pq.Format.BINARY)
    psycopg.adapters.register_dumper(column, dumper)
    return column


# A column's element type, by the Python type of its values: what psycopg would choose for
# them (an int as bigint, whatever its size: the statement casts to its column's type).
# Values of any other type (bytes, wrappers, naive datetimes) go as a plain list.
_COLUMNS: dict[type, type[list[Any]]] = {
    bool: _column_type("bool"),
    int: _column_type("int8"),
    str: _column_type("text"),
    uuid.UUID: _column_type("uuid"),
    datetime: _column_type("timestamptz"),
}


def column(values: tuple[Any, ...]) -> list[Any]:
    """`values` as one array parameter: typed by its first value that is not None when the
    type is one of _COLUMNS (every other value must then be of that type, or None; psycopg
    refuses a mixed list too), a plain list otherwise."""
    for value in values:
        if value is not None:
            typed = _COLUMNS.get(type(value))
            if typed is not None and (type(value) is not datetime or value.tzinfo is not None):
                return typed(values)
            break
    return list(values)


@dataclass(frozen=True)
class Bulk:
    """A statement that takes all its rows in one execution: one array parameter per
    column, read back with `unnest(%s::type[], ...)`. Rows are tuples in the arrays' order.
    executemany costs one execution (and, in a pipeline, one socket write) per row; a
    batch's rows are mostly per-statement costs, here paid once."""

    statement: sql.Composed

    async def run(self, conn: Statements, rows: list[tuple[Any, ...]]) -> None:
        """Execute the statement once for all `rows` (nothing when there are none).
        Prepared once used often (psycopg's choice); its plan is made under the batch
        transaction's planner settings (runtime.PLANNER_SETTINGS), which keep it an index
        plan however small its tables were when it was made."""
        if rows:
            columns = [column(values) for values in zip(*rows, strict=True)]
            await conn.execute(self.statement, columns)


def unnest(*types: str) -> str:
    """`unnest(%b::t1[], %b::t2[], ...)`: a Bulk statement's rows, as a FROM item. Binary
    parameters: as text, psycopg quotes each element of each array in Python (a third of
    the execution's time, for a batch of twenty rows)."""
    return "unnest(" + ", ".join(f"%b::{t}[]" for t in types) + ")"


class Runs:
    """Collects (statement, parameters) in event order. Consecutive rows of one statement go
    out together: in one executemany, or in one execution for a Bulk statement. A batch of
    500 messages is one call, not 500, and no statement ever overtakes one queued before it."""

    def __init__(self, conn: Statements) -> None:
        self.conn = conn
        self._statement: sql.Composed | Bulk | None = None
        self._rows: list[Any] = []

    async def add(self, statement: sql.Composed | Bulk, row: Any) -> None:
        """Queue one execution of `statement` with `row` (a tuple or a dict; a tuple for Bulk)."""
        if statement is not self._statement:
            await self.flush()
            self._statement = statement
        self._rows.append(row)

    async def flush(self) -> None:
        """Send everything queued."""
        if self._statement is not None and self._rows:
            if isinstance(self._statement, Bulk):
                await self._statement.run(self.conn, self._rows)
            else:
                await self.conn.executemany(self._statement, self._rows)
        self._statement = None
        self._rows = []
