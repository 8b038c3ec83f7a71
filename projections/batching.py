"""Statements of a projection batch, sent in order but as few executemany calls as can be."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql


class Runs:
    """Collects (statement, parameters) in event order. Consecutive rows of one statement go
    out in one executemany: a batch of 500 messages is one call, not 500, and no statement
    ever overtakes one queued before it."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self._statement: sql.Composed | None = None
        self._rows: list[Any] = []

    async def add(self, statement: sql.Composed, row: Any) -> None:
        """Queue one execution of `statement` with `row` (a tuple or a dict)."""
        if statement is not self._statement:
            await self.flush()
            self._statement = statement
        self._rows.append(row)

    async def flush(self) -> None:
        """Send everything queued."""
        if self._statement is not None and self._rows:
            async with self.conn.cursor() as cur:
                await cur.executemany(self._statement, self._rows)
        self._statement = None
        self._rows = []
