"""The feed read model (what the gateway sends): numbered frames per topic, client views
only, and the auction notifications it shares with the notifications read model."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from psycopg_pool import AsyncConnectionPool

from events.envelope import Position
from infra.pipeline import Statements
from infra.store import EventStore
from projections import feed
from projections.runtime import envelope_of, read_checkpoint
from tests.fix_chat import create_channel, join, say, users
from tests.fix_stack import Stack
from tests.integration.test_auctions import list_auction

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def frames(
    pool: AsyncConnectionPool, topic: str, position: str
) -> list[tuple[int, str, dict[str, Any]]]:
    """The topic's frames, once the feed has applied `position`."""
    wanted = Position.parse(position)
    async with pool.connection() as conn:
        for _ in range(200):
            if await read_checkpoint(conn, "rm_feed") >= wanted:
                break
            await asyncio.sleep(0.025)
        else:
            raise AssertionError("the feed did not catch up")
        cur = await conn.execute(
            "SELECT seq, name, data FROM rm_feed.frames WHERE topic = %s ORDER BY seq", (topic,)
        )
        return [(seq, name, msgspec.json.decode(data)) for seq, name, data in await cur.fetchall()]


async def test_channel_frames_are_numbered_and_notifications_reach_me(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    owner, ann = await users(stack, EventStore(pool), 2)
    cid = await create_channel(stack.write, owner, password="hunter22")
    r = await stack.write.post(
        f"/v1/channels/{cid}/join", json={"password": "hunter22"}, headers=ann.headers
    )
    assert r.status_code == 200
    await say(stack.write, cid, owner, "one")
    last = await say(stack.write, cid, ann, f"two @{owner.username}")
    got = await frames(pool, feed.channel_topic(cid), last["position"])
    assert [(seq, name) for seq, name, _ in got] == [
        (1, "member.joined"),
        (2, "member.joined"),
        (3, "message.sent"),
        (4, "message.sent"),
    ]
    assert got[3][2]["text"] == f"two @{owner.username}" and got[3][2]["seq"] == 2
    assert "hunter22" not in str(got) and "argon2" not in str(got)
    mine = await frames(pool, feed.me_topic(owner.id), last["position"])
    assert [(seq, name, data["kind"]) for seq, name, data in mine] == [
        (1, "notification", "mentioned")
    ]


async def test_auction_frames_and_notifications(stack: Stack, pool: AsyncConnectionPool) -> None:
    seller, ann, bob = await users(stack, EventStore(pool), 3)
    aid = await list_auction(
        stack, seller, ends_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()
    )
    await stack.write.post(f"/v1/auctions/{aid}/bids", json={"amount": 1000}, headers=ann.headers)
    r = await stack.write.post(
        f"/v1/auctions/{aid}/bids", json={"amount": 1100}, headers=bob.headers
    )
    position = r.json()["position"]
    got = await frames(pool, feed.auction_topic(aid), position)
    assert [(seq, name) for seq, name, _ in got] == [
        (1, "auction.opened"),
        (2, "bid.placed"),
        (3, "bid.placed"),
    ]
    assert got[2][2]["amount"] == 1100 and got[2][2]["bidder_id"] == bob.id
    outbid = await frames(pool, feed.me_topic(ann.id), position)
    assert [d["kind"] for _, _, d in outbid] == ["outbid"] and outbid[0][2]["amount"] == 1100
    listed = await stack.read.get(
        "/v1/me/notifications", headers={**ann.headers, "X-Min-Position": position}
    )
    assert [
        (n["kind"], n["auction_id"], n["amount"], n["currency"]) for n in listed.json()["items"]
    ] == [("outbid", aid, 1100, "EUR")]


async def test_a_batch_applied_again_adds_no_frame(stack: Stack, pool: AsyncConnectionPool) -> None:
    owner, ann = await users(stack, EventStore(pool), 2)
    cid = await create_channel(stack.write, owner)
    await join(stack.write, cid, ann)
    last = await say(stack.write, cid, ann)
    before = await frames(pool, feed.channel_topic(cid), last["position"])
    recorded = await EventStore(pool).read_stream(f"channel-{cid}")
    async with pool.connection() as conn, conn.transaction():
        statements = Statements(conn)
        await feed.apply(statements, "rm_feed", [envelope_of(e) for e in recorded])
        await statements.send()
    assert await frames(pool, feed.channel_topic(cid), last["position"]) == before
    # Skipped frames took no number: the next message's frame follows the last, no gap.
    after = await say(stack.write, cid, ann)
    seqs = [seq for seq, _, _ in await frames(pool, feed.channel_topic(cid), after["position"])]
    assert seqs == list(range(1, len(before) + 2))
