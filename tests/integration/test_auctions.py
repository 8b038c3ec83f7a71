"""Auctions over real HTTP and a real store: listing, bids with their bad inputs, anti-sniping,
buy-now, cancel, and the closer (on time, exactly once with two, overdue after a restart)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from psycopg_pool import AsyncConnectionPool

from events.auction import auction_stream
from infra.store import EventStore
from tests.fix_chat import User, users
from tests.fix_stack import Stack
from tests.integration.test_register_slice import assert_problem
from write_api.closer import Closer

pytestmark = pytest.mark.asyncio(loop_scope="session")


def terms(**overrides: Any) -> dict[str, Any]:
    ends = datetime.now(UTC) + timedelta(hours=1)
    return {"title": "A lamp", "currency": "EUR", "starting_price": 1000, "min_increment": 100,
            "ends_at": ends.isoformat(), **overrides}  # fmt: skip


async def list_auction(stack: Stack, seller: User, **overrides: Any) -> str:
    r = await stack.write.post("/v1/auctions", json=terms(**overrides), headers=seller.headers)
    assert r.status_code == 201, r.text
    auction_id: str = r.json()["auction_id"]
    return auction_id


async def events_of(pool: AsyncConnectionPool, auction_id: str) -> list[tuple[str, dict[str, Any]]]:
    recorded = await EventStore(pool).read_stream(auction_stream(auction_id))
    return [(e.type, msgspec.json.decode(e.data)) for e in recorded]


async def test_listing_refuses_bad_terms(stack: Stack, pool: AsyncConnectionPool) -> None:
    (seller,) = await users(stack, EventStore(pool), 1)
    now = datetime.now(UTC)
    for bad in (dict(starting_price=0), dict(starting_price=-1), dict(starting_price=10.5),
                dict(starting_price="1000"), dict(starting_price=10**16), dict(min_increment=0),
                dict(currency="EURO"), dict(currency="eur"), dict(currency="XYZ"),
                dict(ends_at="tomorrow"), dict(ends_at=(now + timedelta(hours=1)).replace(tzinfo=None).isoformat()),
                dict(anti_snipe_s=-5), dict(title=""), dict(colour="red")):  # fmt: skip
        r = await stack.write.post("/v1/auctions", json=terms(**bad), headers=seller.headers)
        assert_problem(r, 400, "validation_failed")
    for bad in (dict(ends_at=(now - timedelta(minutes=1)).isoformat()),
                dict(ends_at=(now + timedelta(days=3 * 365)).isoformat()),
                dict(buy_now_price=500), dict(reserve_price=900),
                dict(reserve_price=5000, buy_now_price=4000)):  # fmt: skip
        r = await stack.write.post("/v1/auctions", json=terms(**bad), headers=seller.headers)
        body = assert_problem(r, 422, "invalid_auction")
        assert body["errors"], body
    assert_problem(await stack.write.post("/v1/auctions", json=terms()), 401, "unauthorized")


async def test_bids_take_steps_and_refuse_what_the_rules_refuse(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    seller, ann, bob = await users(stack, EventStore(pool), 3)
    aid = await list_auction(stack, seller)
    bids = f"/v1/auctions/{aid}/bids"
    w = stack.write
    body = assert_problem(
        await w.post(bids, json={"amount": 999}, headers=ann.headers), 409, "bid_too_low"
    )
    assert body["minimum_bid"] == 1000
    first = await w.post(bids, json={"amount": 1000}, headers=ann.headers)
    assert first.status_code == 201, first.text
    assert {"bid_id", "position", "ends_at"} <= first.json().keys()
    assert first.headers["X-Position"] == first.json()["position"]
    body = assert_problem(
        await w.post(bids, json={"amount": 1099}, headers=bob.headers), 409, "bid_too_low"
    )
    assert body["minimum_bid"] == 1100
    for bad in ({"amount": 0}, {"amount": -100}, {"amount": 1200.5}, {"amount": "1200"},
                {"amount": 10**16}, {}, {"amount": 1200, "currency": "XYZ"}, {"amount": 1200, "x": 1}):  # fmt: skip
        assert_problem(await w.post(bids, json=bad, headers=bob.headers), 400, "validation_failed")
    assert_problem(await w.post(bids, json={"amount": 1200, "currency": "USD"}, headers=bob.headers),
                   422, "currency_mismatch")  # fmt: skip
    assert_problem(
        await w.post(bids, json={"amount": 5000}, headers=seller.headers), 403, "seller_cannot_bid"
    )
    assert_problem(await w.post("/v1/auctions/nope/bids", json={"amount": 5000}, headers=bob.headers),
                   404, "auction_not_found")  # fmt: skip
    assert_problem(await w.post(f"/v1/auctions/{seller.id}/bids", json={"amount": 5000}, headers=bob.headers),
                   404, "auction_not_found")  # fmt: skip
    # idempotent bids: a retried request is answered again, not placed again
    again = [await w.post(bids, json={"amount": 1100}, headers=bob.key("bid-1")) for _ in range(2)]
    assert again[0].json() == again[1].json() and again[1].status_code == 201
    assert_problem(await w.post(bids, json={"amount": 1300}, headers=bob.key("bid-1")), 422,
                   "idempotency_key_reused")  # fmt: skip
    # only the seller cancels, and not once a bid was accepted
    assert_problem(
        await w.post(f"/v1/auctions/{aid}/cancel", headers=ann.headers), 403, "forbidden"
    )
    assert_problem(
        await w.post(f"/v1/auctions/{aid}/cancel", headers=seller.headers), 409, "auction_has_bids"
    )
    placed = [d["amount"] for t, d in await events_of(pool, aid) if t == "BidPlaced"]
    assert placed == [1000, 1100]


async def test_concurrent_bids_never_take_the_same_step(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    seller, *bidders = await users(stack, EventStore(pool), 41)
    aid = await list_auction(stack, seller)

    async def bid(user: User) -> int:
        r = await stack.write.post(
            f"/v1/auctions/{aid}/bids", json={"amount": 1000}, headers=user.headers
        )
        return r.status_code

    codes = await asyncio.gather(*(bid(u) for u in bidders))
    assert sorted(codes) == [201] + [409] * 39
    assert [t for t, _ in await events_of(pool, aid)] == ["AuctionOpened", "BidPlaced"]


async def test_cancel_and_buy_now(stack: Stack, pool: AsyncConnectionPool) -> None:
    seller, ann = await users(stack, EventStore(pool), 2)
    w = stack.write
    aid = await list_auction(stack, seller)
    assert (await w.post(f"/v1/auctions/{aid}/cancel", headers=seller.headers)).status_code == 200
    assert_problem(await w.post(f"/v1/auctions/{aid}/bids", json={"amount": 5000}, headers=ann.headers),
                   409, "auction_closed")  # fmt: skip
    assert_problem(
        await w.post(f"/v1/auctions/{aid}/buy-now", headers=ann.headers), 409, "auction_closed"
    )

    aid = await list_auction(stack, seller, buy_now_price=5000)
    assert_problem(
        await w.post(f"/v1/auctions/{aid}/buy-now", headers=seller.headers),
        403,
        "seller_cannot_bid",
    )
    r = await w.post(f"/v1/auctions/{aid}/buy-now", headers=ann.headers)
    assert r.status_code == 200, r.text
    closed = [d for t, d in await events_of(pool, aid) if t == "AuctionClosed"]
    assert closed == [
        {**closed[0], "sold": True, "winner_id": ann.id, "price": 5000, "reason": "bought_now"}
    ]
    assert_problem(
        await w.post(f"/v1/auctions/{aid}/buy-now", headers=ann.headers), 409, "auction_closed"
    )
    plain = await list_auction(stack, seller)
    assert_problem(
        await w.post(f"/v1/auctions/{plain}/buy-now", headers=ann.headers),
        409,
        "buy_now_unavailable",
    )


async def test_a_late_bid_moves_the_end(stack: Stack, pool: AsyncConnectionPool) -> None:
    seller, ann = await users(stack, EventStore(pool), 2)
    ends = datetime.now(UTC) + timedelta(seconds=20)
    aid = await list_auction(stack, seller, ends_at=ends.isoformat(), anti_snipe_s=60)
    r = await stack.write.post(
        f"/v1/auctions/{aid}/bids", json={"amount": 1000}, headers=ann.headers
    )
    assert r.status_code == 201, r.text
    new_end = datetime.fromisoformat(r.json()["ends_at"])
    assert new_end > ends + timedelta(seconds=35)
    (extended,) = [d for t, d in await events_of(pool, aid) if t == "AuctionExtended"]
    assert datetime.fromisoformat(extended["ends_at"]) == new_end


@contextlib.asynccontextmanager
async def closing(pool: AsyncConnectionPool) -> AsyncIterator[Closer]:
    stop = asyncio.Event()
    closer = Closer(pool, interval=0.1)
    task = asyncio.create_task(closer.run(stop))
    try:
        yield closer
    finally:
        stop.set()
        await task


async def wait_closed(pool: AsyncConnectionPool, auction_id: str, seconds: float) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        closed = [d for t, d in await events_of(pool, auction_id) if t == "AuctionClosed"]
        if closed:
            return closed[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"auction {auction_id} not closed within {seconds} s")


async def test_the_closer_closes_at_the_end(stack: Stack, pool: AsyncConnectionPool) -> None:
    seller, ann = await users(stack, EventStore(pool), 2)
    ends = datetime.now(UTC) + timedelta(seconds=2)
    sold = await list_auction(stack, seller, ends_at=ends.isoformat(), reserve_price=1000)
    unsold = await list_auction(stack, seller, ends_at=ends.isoformat(), reserve_price=3000)
    empty = await list_auction(stack, seller, ends_at=ends.isoformat())
    for aid in (sold, unsold):
        r = await stack.write.post(
            f"/v1/auctions/{aid}/bids", json={"amount": 2000}, headers=ann.headers
        )
        assert r.status_code == 201, r.text
    async with closing(pool):
        outcomes = {aid: await wait_closed(pool, aid, 5) for aid in (sold, unsold, empty)}
    for closed in outcomes.values():
        late = datetime.fromisoformat(closed["closed_at"]) - ends
        assert timedelta(0) <= late < timedelta(seconds=1)
    assert (
        outcomes[sold]["sold"]
        and outcomes[sold]["winner_id"] == ann.id
        and outcomes[sold]["price"] == 2000
    )
    assert not outcomes[unsold]["sold"] and outcomes[unsold]["reason"] == "reserve_not_met"
    assert not outcomes[empty]["sold"] and outcomes[empty]["reason"] == "no_bids"
    # and a bid after the end is refused
    r = await stack.write.post(
        f"/v1/auctions/{sold}/bids", json={"amount": 9000}, headers=ann.headers
    )
    assert_problem(r, 409, "auction_closed")


async def test_two_closers_close_once_and_overdue_ones_after_a_restart(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    (seller,) = await users(stack, EventStore(pool), 1)
    ends = datetime.now(UTC) + timedelta(seconds=1.5)
    ids = [await list_auction(stack, seller, ends_at=ends.isoformat()) for _ in range(10)]
    # no closer runs while they end: they are overdue when the closers start
    await asyncio.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds()) + 0.5)
    closers = [Closer(pool), Closer(pool)]
    for _ in range(40):  # the read model may still be catching up with the listings
        if len(await closers[0].due(datetime.now(UTC))) == 10:
            break
        await asyncio.sleep(0.05)
    closed = await asyncio.gather(*(c.tick() for c in closers))
    assert sum(closed) == 10
    for aid in ids:
        assert [t for t, _ in await events_of(pool, aid)].count("AuctionClosed") == 1
    assert sum(await asyncio.gather(*(c.tick() for c in closers))) == 0
