"""Tamper evidence: the log refuses changes, and changes forced by a superuser are found."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from infra.audit import verify_all, verify_stream
from infra.db import make_pool
from infra.store import NO_STREAM, EventStore, NewEvent, StreamAppend
from tests.fix_stack import Stack, relay_caught_up
from tests.fix_tamper import force

pytestmark = pytest.mark.asyncio(loop_scope="session")


def new_event(n: int) -> NewEvent:
    return NewEvent(
        event_id=uuid.uuid4(), type="Thing", data=f'{{"n": {n}}}'.encode(), metadata=b"{}"
    )


async def seeded(stack: Stack) -> tuple[AsyncConnectionPool, list[str]]:
    """Three streams of three events, a registered user, all published by the relay."""
    assert stack.settings.database_url
    pool = make_pool(stack.settings.database_url, min_size=1, max_size=4)
    await pool.open()
    store = EventStore(pool)
    streams = [f"thing-{uuid.uuid4()}" for _ in range(3)]
    for s in streams:
        await store.append([StreamAppend(s, NO_STREAM, [new_event(1), new_event(2)])])
        await store.append([StreamAppend(s, 2, [new_event(3)])])
    r = await stack.write.post(
        "/v1/auth/register", json={"username": f"u{uuid.uuid4().hex[:8]}", "password": "12345678"}
    )
    assert r.status_code == 201
    await relay_caught_up(pool)
    verdict = await verify_all(pool)
    assert verdict.ok and verdict.events == 11 and verdict.anchors_checked >= 1, verdict
    return pool, streams


async def test_changed_payload_is_named_by_stream_and_version(stack: Stack) -> None:
    pool, streams = await seeded(stack)
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            async with pool.connection() as conn:
                await conn.execute(
                    "UPDATE events SET data = '{\"n\": 99}' WHERE stream_id = %s", (streams[1],)
                )
        await force(
            pool,
            "UPDATE events SET data = '{\"n\": 99}' WHERE stream_id = %s AND stream_version = 2",
            streams[1],
        )
        stream_verdict = await verify_stream(EventStore(pool), streams[1])
        assert not stream_verdict.ok and stream_verdict.first_bad_version == 2
        assert (await verify_stream(EventStore(pool), streams[0])).ok
        verdict = await verify_all(pool)
        assert not verdict.ok and (verdict.first_bad_stream, verdict.first_bad_version) == (
            streams[1],
            2,
        )
    finally:
        await pool.close()


async def test_deleted_last_event_of_a_stream_is_found(stack: Stack) -> None:
    pool, streams = await seeded(stack)
    try:
        await force(
            pool, "DELETE FROM events WHERE stream_id = %s AND stream_version = 3", streams[0]
        )
        assert (
            await verify_stream(EventStore(pool), streams[0])
        ).ok  # the stream alone looks whole
        verdict = await verify_all(pool)
        assert not verdict.ok and verdict.reason, verdict
    finally:
        await pool.close()


async def test_deleted_whole_stream_is_found(stack: Stack) -> None:
    pool, streams = await seeded(stack)
    try:
        await force(pool, "DELETE FROM events WHERE stream_id = %s", streams[2])
        assert not (await verify_all(pool)).ok
    finally:
        await pool.close()


async def test_reordered_events_are_found(stack: Stack) -> None:
    pool, streams = await seeded(stack)
    try:
        # Swap the payloads of two events of one stream: each row still looks plausible.
        await force(
            pool,
            "UPDATE events e SET data = o.data FROM events o WHERE e.stream_id = %s AND o.stream_id = e.stream_id"
            " AND o.stream_version = 5 - e.stream_version AND e.stream_version IN (2, 3)",
            streams[0],
        )
        verdict = await verify_all(pool)
        assert (
            not verdict.ok
            and verdict.first_bad_stream == streams[0]
            and verdict.first_bad_version == 2
        )
        # Moving an event to a later place in the global order breaks the chain as well.
        await force(
            pool,
            "UPDATE events SET txid = ((txid::text)::bigint + 1000000)::text::xid8 WHERE stream_id = %s AND stream_version = 1",
            streams[1],
        )
        assert not (await verify_all(pool)).ok
    finally:
        await pool.close()
