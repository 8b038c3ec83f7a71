"""Frame notices: each projector batch tells the gateways which frames it wrote
(projections.feed.FRAMES_CHANNEL), and a gateway's live tail takes them instead of querying
the feed; it reads the feed whenever a notice is missing, unreadable or too big."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from uuid_utils.compat import uuid7

from events.envelope import ORIGIN, Position
from infra.settings import Settings
from infra.store import EventStore, RecordedEvent
from projections import feed
from projections.runner import ProjectionRunner
from projections.runtime import apply_batch, ensure_schema, envelope_of, read_checkpoint
from read_api.gateway.feed import FeedReader
from read_api.gateway.server import Gateway
from tests.fix_chat import create_channel, join, say, users
from tests.fix_gateway import message_with, signed_in, subscribe, token_of, until
from tests.fix_stack import Stack
from tests.integration.chat_log import ChatLog

pytestmark = pytest.mark.asyncio(loop_scope="session")


@contextlib.asynccontextmanager
async def listening(url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(feed.FRAMES_CHANNEL)))
        yield conn


async def notices(conn: psycopg.AsyncConnection[Any], n: int) -> list[dict[str, Any]]:
    """The next `n` frame notices (fewer if they do not come within 5 s)."""
    got = [json.loads(note.payload) async for note in conn.notifies(timeout=5, stop_after=n)]
    assert len(got) == n, got
    return got


async def chat_log(pool: AsyncConnectionPool, *texts: str) -> list[RecordedEvent]:
    """A channel with two members and one message for each of `texts`, written straight to
    the store (no projector runs: the test applies them), with the feed's schema made."""
    store = EventStore(pool, notify=False)
    log = ChatLog(store)
    owner, ann = str(uuid7()), str(uuid7())
    cid = await log.channel(owner)
    await log.join(cid, ann)
    for text in texts:
        await log.send(cid, ann, text)
    async with pool.connection() as conn:
        await ensure_schema(conn, feed)
    return await store.read_all(ORIGIN, limit=1000)


def as_notified(frames: list[Any]) -> list[list[Any]]:
    """FeedReader's frames as a notice lists them."""
    return [[f.topic, f.seq, f.position, f.name, json.loads(f.data), f.event_id, f.traceparent]
            for f in frames]  # fmt: skip


async def test_each_batch_announces_exactly_the_frames_the_feed_holds_for_its_span(
    pool: AsyncConnectionPool, fresh_database_url: str
) -> None:
    events = await chat_log(pool, "one", "two", "three", "four")
    mid = len(events) // 2
    spans = [(ORIGIN, events[mid - 1].at), (events[mid - 1].at, events[-1].at)]
    async with listening(fresh_database_url) as listener:
        async with pool.connection() as conn:
            for (after, upto), part in zip(spans, [events[:mid], events[mid:]], strict=True):
                await apply_batch(conn, feed, "rm_feed", after, part, upto)
        got = await notices(listener, 2)
    assert [(n["after"], n["upto"]) for n in got] == [(a.token(), u.token()) for a, u in spans]
    reader = FeedReader(pool)
    for notice, (after, upto) in zip(got, spans, strict=True):
        frames, reached = await reader.between(after, upto)
        assert reached == upto and frames
        assert notice["frames"] == as_notified(frames)
    texts = [f[4]["text"] for n in got for f in n["frames"] if f[3] == "message.sent"]
    assert texts == ["one", "two", "three", "four"]


async def test_a_rebuild_batch_announces_nothing(
    pool: AsyncConnectionPool, fresh_database_url: str
) -> None:
    events = await chat_log(pool, "one")
    async with listening(fresh_database_url) as listener:
        async with pool.connection() as conn:
            await apply_batch(conn, feed, "rm_feed", ORIGIN, events, events[-1].at, notify=False)
        assert [n.payload async for n in listener.notifies(timeout=0.5)] == []


async def test_frames_too_big_for_a_notification_are_announced_by_their_span_alone(
    pool: AsyncConnectionPool, fresh_database_url: str
) -> None:
    # 2,800 bytes of text each but 1,400 characters: the limit is on bytes.
    events = await chat_log(pool, *("é" * 1400 for _ in range(3)))
    async with listening(fresh_database_url) as listener:
        async with pool.connection() as conn:
            await apply_batch(conn, feed, "rm_feed", ORIGIN, events, events[-1].at)
            assert await read_checkpoint(conn, "rm_feed") == events[-1].at  # it committed
        got = await notices(listener, 1)
    assert got == [{"after": ORIGIN.token(), "upto": events[-1].at.token()}]
    frames, _ = await FeedReader(pool).between(ORIGIN, events[-1].at)
    assert [f.name for f in frames].count("message.sent") == 3


async def test_a_batch_too_long_to_announce_is_not_read_back(
    pool: AsyncConnectionPool, fresh_database_url: str
) -> None:
    events = await chat_log(pool, *(f"m{i}" for i in range(feed.NOTICE_MAX_EVENTS)))
    assert len(events) > feed.NOTICE_MAX_EVENTS  # the channel's creation and the join too
    async with listening(fresh_database_url) as listener:
        async with pool.connection() as conn:
            await apply_batch(conn, feed, "rm_feed", ORIGIN, events, events[-1].at)
            assert await read_checkpoint(conn, "rm_feed") == events[-1].at
        assert [n.payload async for n in listener.notifies(timeout=0.5)] == []


async def test_the_projector_holds_notices_back_while_the_notify_queue_fills(
    settings: Settings, pool: AsyncConnectionPool, fresh_database_url: str
) -> None:
    """A listener that stops reading holds PostgreSQL's NOTIFY queue; frame notices would
    fill it a hundred times faster than the rest. Past its threshold (0 here: any usage,
    even none) the projector stops announcing, until the queue is below it again."""
    events = await chat_log(pool, "one", "two")
    runner = ProjectionRunner(settings, pool, [feed], announce_below=0.0)
    await runner.start()
    await runner.measure_lag()
    assert not runner.announcing
    assert REGISTRY.get_sample_value("hubbub_projector_announcing") == 0
    usage = REGISTRY.get_sample_value("hubbub_notify_queue_usage")
    assert usage is not None and 0.0 <= usage < 0.5  # the cluster's: other tests listen too
    async with listening(fresh_database_url) as listener:
        await runner.handle([(envelope_of(e), prev) for e, prev in
                             zip(events[:2], [ORIGIN, events[0].at], strict=True)])  # fmt: skip
        assert [n.payload async for n in listener.notifies(timeout=0.5)] == []
        runner.announce_below = 0.5
        await runner.measure_lag()
        assert runner.announcing and REGISTRY.get_sample_value("hubbub_projector_announcing") == 1
        await runner.handle([(envelope_of(e), prev) for e, prev in
                             zip(events[2:], [e.at for e in events[1:-1]], strict=True)])  # fmt: skip
        got = await notices(listener, 1)
    assert (got[0]["after"], got[0]["upto"]) == (events[1].at.token(), events[-1].at.token())
    assert [f[3] for f in got[0]["frames"]][-2:] == ["message.sent", "message.sent"]


def tail_reads(source: str) -> float:
    return REGISTRY.get_sample_value("hubbub_gateway_tail_reads_total", {"source": source}) or 0


async def test_the_gateway_tail_takes_notices_and_reads_the_feed_when_it_must(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    owner, ann = await users(stack, EventStore(pool), 2)
    cid = await create_channel(stack.write, owner)
    await join(stack.write, cid, ann)
    ws = await signed_in(gateway.url, token_of(ann))
    assert (await subscribe(ws, f"channel:{cid}"))["type"] == "subscribed"
    noticed = tail_reads("notice")
    for text in ("m0", "m1", "m2"):
        await say(stack.write, cid, owner, text)
    got = await until(ws, message_with("m2"))
    assert [f["data"]["text"] for f in got if f["name"] == "message.sent"] == ["m0", "m1", "m2"]
    assert tail_reads("notice") > noticed
    # Garbage, and a notice the tail has passed (with a frame nobody wrote), change nothing.
    forged = {"after": ORIGIN.token(), "upto": Position(2**40, 1).token(), "frames": [
        [f"channel:{cid}", 99, Position(1, 1).token(), "message.sent", {"text": "forged"},
         str(uuid7()), None],
    ]}  # fmt: skip
    async with pool.connection() as conn:
        for payload in ("not json", '{"after": "x"}', json.dumps(forged)):
            await conn.execute("SELECT pg_notify(%s, %s)", (feed.FRAMES_CHANNEL, payload))
    # A message too big for a notice comes from the feed, in order with the others.
    big = "é" * 4000
    from_feed = tail_reads("feed")
    await say(stack.write, cid, owner, big)
    await say(stack.write, cid, owner, "m3")
    got += await until(ws, message_with("m3"))
    sent = [f for f in got if f["name"] == "message.sent"]
    assert [f["data"]["text"] for f in sent] == ["m0", "m1", "m2", big, "m3"]
    seqs = [f["seq"] for f in got]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no repeat
    assert tail_reads("feed") > from_feed
    assert not [t for t in gateway.tasks if t.done()]
