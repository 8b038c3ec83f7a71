"""Schema evolution for real: an AuctionOpened stored at schema version 1 (before
`currency_digits`) is read through the upcaster by the decider, the projections and the
audit state, while the store, its hashes and the export keep the bytes as written."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from psycopg_pool import AsyncConnectionPool

from events.auction import auction_stream
from events.envelope import ENVELOPE_DECODER
from events.registry import SCHEMA_VERSIONS
from infra.store import NO_STREAM, EventStore, NewEvent, StreamAppend
from tests.fix_chat import users
from tests.fix_stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


def v1_auction_opened(auction_id: str, seller_id: str) -> bytes:
    """The JSON a version 1 writer stored: no `currency_digits`, a yen auction."""
    now = datetime.now(UTC)
    return msgspec.json.encode({
        "type": "AuctionOpened", "auction_id": auction_id, "seller_id": seller_id,
        "title": "A kettle", "description": "", "category": None, "currency": "JPY",
        "starting_price": 1500, "min_increment": 100, "reserve_price": None,
        "buy_now_price": None, "ends_at": (now + timedelta(hours=1)).isoformat(),
        "anti_snipe_s": 0, "opened_at": now.isoformat(),
    })  # fmt: skip


async def test_a_version_1_event_replays_through_decider_projections_and_audit(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    assert SCHEMA_VERSIONS["AuctionOpened"] == 2
    store = EventStore(pool)
    seller, bidder, auditor = await users(stack, store, 2) + await users(
        stack, store, 1, roles=frozenset({"auditor"})
    )
    aid = str(uuid.uuid4())
    stored = v1_auction_opened(aid, seller.id)
    await store.append([StreamAppend(auction_stream(aid), NO_STREAM, [NewEvent(
        event_id=uuid.uuid4(), type="AuctionOpened", data=stored,
        metadata=b'{"correlation_id":"v1-writer"}', schema_version=1,
    )])])  # fmt: skip

    # The decider folds the upcast event: the first bid must meet the starting price.
    bids = f"/v1/auctions/{aid}/bids"
    low = await stack.write.post(bids, json={"amount": 1499}, headers=bidder.headers)
    assert low.status_code == 409 and low.json()["minimum_bid"] == 1500, low.text
    bid = await stack.write.post(bids, json={"amount": 1500}, headers=bidder.headers)
    assert bid.status_code == 201, bid.text

    # The projections read it too.
    r = await stack.read.get(
        f"/v1/auctions/{aid}",
        headers={**bidder.headers, "X-Min-Position": bid.json()["position"]},
    )
    assert r.status_code == 200, r.text
    view = r.json()
    assert (view["currency"], view["current_price"], view["bid_count"]) == ("JPY", 1500, 1)
    assert view["leading_bidder_id"] == bidder.id

    # The store and the export keep version 1 and the very bytes, so the chain verifies.
    (first, _bid) = await store.read_stream(auction_stream(aid))
    assert (first.schema_version, first.data) == (1, stored)
    export = await stack.read.get(
        "/v1/audit/events", params={"stream_id": auction_stream(aid)}, headers=auditor.headers
    )
    assert export.status_code == 200, export.text
    lines = [ENVELOPE_DECODER.decode(line) for line in export.content.splitlines()]
    assert [(e.type, e.schema_version) for e in lines] == [("AuctionOpened", 1), ("BidPlaced", 1)]
    assert msgspec.json.decode(lines[0].data) == msgspec.json.decode(stored)
    verify = await stack.read.get(
        f"/v1/audit/streams/{auction_stream(aid)}/verify", headers=auditor.headers
    )
    assert verify.json()["ok"] is True, verify.text

    # The auditor's state is folded from the upcast event with the decider's evolve.
    state = await stack.read.get(
        f"/v1/audit/streams/{auction_stream(aid)}/state", headers=auditor.headers
    )
    assert state.status_code == 200, state.text
    body = state.json()["state"]
    assert (body["type"], body["currency"], body["current_price"]) == ("Open", "JPY", 1500)


async def test_new_auctions_are_written_at_version_2(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    (seller,) = await users(stack, EventStore(pool), 1)
    ends = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = await stack.write.post("/v1/auctions", headers=seller.headers, json={
        "title": "A dinar", "currency": "KWD", "starting_price": 1000, "min_increment": 5,
        "ends_at": ends,
    })  # fmt: skip
    assert r.status_code == 201, r.text
    (opened,) = await EventStore(pool).read_stream(auction_stream(r.json()["auction_id"]))
    assert opened.schema_version == 2
    assert msgspec.json.decode(opened.data)["currency_digits"] == 3
