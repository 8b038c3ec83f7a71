"""The chat projections against a real database, without the runner: applying a batch twice
leaves the same rows, and one batch leaves the same rows as the events one at a time (the
folding of tips, receipts and read markers changes nothing a reader can see)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from events.envelope import Envelope
from infra.pipeline import Statements
from infra.store import EventStore
from projections import channels, messages, notifications
from projections.runtime import Projection, create_schema
from tests.integration.chat_log import ChatLog, random_id

pytestmark = pytest.mark.asyncio(loop_scope="session")

CHAT = (channels, messages, notifications)


async def history(log: ChatLog) -> None:
    """A bit of everything, with the orders that matter: invite, join, leave, invite again;
    a reaction added and removed; receipts going back; a message deleted after reactions."""
    ann, bob, cy = random_id(), random_id(), random_id()
    room = await log.channel(ann, visibility="private", password=True)
    await log.invite(room, bob, ann)
    await log.join(room, bob)
    hello = await log.send(room, ann, "hi @bob", mentions=(bob,))
    answer = await log.send(room, bob, "hi", reply_to=hello.message_id, reply_to_author_id=ann)
    await log.react(hello, bob, "👍")
    await log.react(hello, ann, "👍")
    await log.react(hello, ann, "👍", remove=True)
    await log.react(answer, ann, "🎉")
    await log.edit(answer, "hi there")
    await log.delete(answer, bob)
    await log.receipt(hello, ann, read=False)
    await log.send(room, ann, "@bob again", mentions=(bob,))
    await log.receipt(hello, bob, read=True)  # not the latest mention
    await log.leave(room, bob)
    await log.invite(room, bob, ann)  # this invite stays unread: bob has not come back
    await log.invite(room, cy, ann)
    await log.join(room, cy)
    dm = await log.direct(ann, bob)
    first = await log.send(dm, ann, "psst")
    await log.receipt(first, bob, read=False)
    await log.send(dm, bob, "yes?")
    await log.receipt(first, ann, read=True)
    doomed = await log.channel(bob)
    await log.send(doomed, bob, "bye")
    await log.delete_channel(doomed, bob)


async def snapshot(pool: AsyncConnectionPool, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table in `schema` (but the checkpoint), in a stable order."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
            " AND table_name <> 'checkpoint'",
            (schema,),
        )
        tables = [r[0] for r in await cur.fetchall()]
        out = {}
        for table in tables:
            cur = await conn.execute(
                sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            )
            out[table] = sorted(await cur.fetchall(), key=repr)
    return out


async def apply(
    pool: AsyncConnectionPool, projection: Projection, schema: str,
    batches: Sequence[Sequence[Envelope]], *, times: int = 1,
) -> None:  # fmt: skip
    """Apply each batch `times` over, as the runtime does: queued, then sent as one
    transaction."""
    async with pool.connection() as conn:
        for batch in batches:
            wanted = [e for e in batch if e.type in projection.types]
            statements = Statements(conn)
            await statements.execute(b"BEGIN")
            for _ in range(times):
                await projection.apply(statements, schema, wanted)
            await statements.execute(b"COMMIT")
            await statements.send()


async def test_applying_twice_or_one_by_one_leaves_the_same_rows(
    pool: AsyncConnectionPool,
) -> None:
    store = EventStore(pool, notify=False)
    before = await store.head()  # the session's database holds other tests' events too
    await history(ChatLog(store))
    envelopes = [e.envelope() for e in await store.read_all(before, limit=10_000)]
    for projection in CHAT:
        once, twice, each = (f"t_{projection.name}_{how}" for how in ("once", "twice", "each"))
        async with pool.connection() as conn:
            for schema in (once, twice, each):
                await create_schema(conn, projection, schema)
        await apply(pool, projection, once, [envelopes])
        await apply(pool, projection, twice, [envelopes], times=2)
        await apply(pool, projection, each, [[e] for e in envelopes])
        expected = await snapshot(pool, once)
        assert all(expected.values()), expected
        assert await snapshot(pool, twice) == expected, projection.name
        assert await snapshot(pool, each) == expected, projection.name
        # and the whole batch again, later, in a transaction of its own
        await apply(pool, projection, once, [envelopes])
        assert await snapshot(pool, once) == expected, projection.name

    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT kind, read FROM t_notifications_once.notifications ORDER BY created_at"
        )
        assert await cur.fetchall() == [
            ("invited", True), ("mentioned", True), ("reply", True), ("mentioned", False),
            ("invited", False), ("invited", True),
        ]  # fmt: skip
        cur = await conn.execute("SELECT count(*) FROM t_channels_once.invites")
        assert await cur.fetchone() == (1,)  # bob's second
        cur = await conn.execute(
            "SELECT kind, member_count, has_password, deleted, last_seq"
            " FROM t_channels_once.channels ORDER BY created_at"
        )
        assert await cur.fetchall() == [
            ("group", 2, True, False, 3), ("direct", 2, False, False, 2),
            ("group", 1, False, True, 1),
        ]  # fmt: skip
        cur = await conn.execute(
            "SELECT seq, text, deleted, (SELECT count(*) FROM t_messages_once.reactions r"
            " WHERE r.message_id = m.message_id) FROM t_messages_once.messages m"
            " ORDER BY sent_at"
        )
        assert (await cur.fetchall())[:3] == [(1, "hi @bob", False, 1), (2, None, True, 0),
                                               (3, "@bob again", False, 0)]  # fmt: skip
