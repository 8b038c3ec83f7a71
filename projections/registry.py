"""Every projection this code base knows, by name."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from projections import auctions, channels, feed, messages, notifications, sessions, users
from projections.runtime import Projection, ensure_schema

ALL: tuple[Projection, ...] = (
    users, sessions, channels, messages, notifications, auctions, feed
)  # fmt: skip


async def ensure_all(pool: AsyncConnectionPool) -> None:
    """Create the schema of every projection that has none yet (any process may be first)."""
    async with pool.connection() as conn:
        for projection in ALL:
            await ensure_schema(conn, projection)


def by_name(name: str) -> Projection:
    """The projection called `name`; KeyError when there is none."""
    for projection in ALL:
        if projection.name == name:
            return projection
    raise KeyError(name)
