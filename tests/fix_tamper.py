"""What a superuser can do to the log, for the tests that must see it found."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool


async def force(pool: AsyncConnectionPool, statement: str, *params: object) -> None:
    """Run `statement` with the triggers that refuse UPDATE and DELETE switched off for the
    transaction (as a superuser can)."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(statement, params)  # type: ignore[arg-type]
