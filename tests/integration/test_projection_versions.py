"""A read model built by older code is rebuilt, blue-green, when the projector starts."""

from __future__ import annotations

import pytest
from psycopg_pool import AsyncConnectionPool

from infra.settings import Settings
from infra.store import EventStore
from projections import users
from projections.ops import projection_status
from projections.runner import ProjectionRunner
from projections.runtime import schema_version
from tests.fix_events import register_users

pytestmark = pytest.mark.asyncio(loop_scope="session")

# rm_users as the first build of this code made it: no versions, no roles
OLD_USERS = """
CREATE SCHEMA rm_users;
CREATE TABLE rm_users.checkpoint (id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    txid xid8 NOT NULL, position bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
INSERT INTO rm_users.checkpoint (txid, position) VALUES ('0', 0);
CREATE TABLE rm_users.users (user_id uuid PRIMARY KEY, username text NOT NULL UNIQUE,
    display_name text NOT NULL, registered_at timestamptz NOT NULL, stream_version bigint NOT NULL);
"""


async def test_a_stale_read_model_is_rebuilt_at_start(
    settings: Settings, pool: AsyncConnectionPool
) -> None:
    store = EventStore(pool, notify=False)
    async with pool.connection() as conn:
        await conn.execute(OLD_USERS)
    ids = await register_users(store, 25)
    states = {s.name: s.status for s in await projection_status(pool, store)}
    assert states["users"] == "stale"

    runner = ProjectionRunner(settings, pool)
    await runner.start()
    await runner.catch_up_all("test")
    async with pool.connection() as conn:
        assert await schema_version(conn, "rm_users") == users.version
        cur = await conn.execute("SELECT user_id::text, roles FROM rm_users.users")
        rows = await cur.fetchall()
    assert {r[0] for r in rows} == set(ids) and all(r[1] == [] for r in rows)
    states = {s.name: s.status for s in await projection_status(pool, store)}
    assert states["users"] == "live"
