"""The auction read endpoints over real HTTP: one auction (the reserve stays secret), its
bids newest first, the listing's filters, sorts and cursors, bad parameters, 404s, 401s,
and read-your-writes after a bid."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from infra.store import EventStore
from tests.fix_chat import User, users
from tests.fix_stack import Stack
from tests.integration.test_auctions import terms
from tests.integration.test_register_slice import assert_problem

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Market:
    """Writes through the write API, remembering the last position for reads after them."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.position = ""

    def _answered(self, r: httpx.Response, status: int) -> dict[str, Any]:
        assert r.status_code == status, r.text
        body: dict[str, Any] = r.json()
        self.position = body["position"]
        return body

    async def list(self, seller: User, **overrides: Any) -> str:
        r = await self.stack.write.post(
            "/v1/auctions", json=terms(**overrides), headers=seller.headers
        )
        auction_id: str = self._answered(r, 201)["auction_id"]
        return auction_id

    async def bid(self, auction_id: str, bidder: User, amount: int) -> dict[str, Any]:
        r = await self.stack.write.post(
            f"/v1/auctions/{auction_id}/bids", json={"amount": amount}, headers=bidder.headers
        )
        return self._answered(r, 201)

    async def close(self, auction_id: str, who: User, how: str) -> None:
        r = await self.stack.write.post(f"/v1/auctions/{auction_id}/{how}", headers=who.headers)
        self._answered(r, 200)

    async def get(self, user: User, path: str, **params: Any) -> httpx.Response:
        """GET from the read API once it has applied every write made so far."""
        headers = {**user.headers, "X-Min-Position": self.position}
        return await self.stack.read.get(path, params=params, headers=headers)

    async def ok(self, user: User, path: str, **params: Any) -> Any:
        r = await self.get(user, path, **params)
        assert r.status_code == 200, r.text
        return r.json()

    async def walk(self, user: User, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a list, two a page, following the cursors."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            extra = {"cursor": cursor} if cursor else {}
            body = await self.ok(user, path, limit=2, **params, **extra)
            assert len(body["items"]) <= 2
            items += body["items"]
            if (cursor := body["next_cursor"]) is None:
                return items


def ends_in(minutes: int) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


async def test_one_auction_keeps_its_reserve_secret(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    seller, ann = await users(stack, EventStore(pool), 2)
    m = Market(stack)
    aid = await m.list(seller, title="A clock", description="ticks", category="clocks",
                       reserve_price=4321, buy_now_price=9000, anti_snipe_s=30)  # fmt: skip
    r = await m.get(ann, f"/v1/auctions/{aid}")
    assert r.status_code == 200, r.text
    view = r.json()
    assert view == {
        "auction_id": aid, "seller_id": seller.id, "title": "A clock", "description": "ticks",
        "category": "clocks", "currency": "EUR", "starting_price": 1000, "min_increment": 100,
        "reserve_met": False, "buy_now_price": 9000, "status": "open", "close_reason": None,
        "current_price": None, "minimum_bid": 1000, "leading_bidder_id": None, "bid_count": 0,
        "ends_at": view["ends_at"], "opened_at": view["opened_at"], "closed_at": None,
        "winner_id": None, "anti_snipe_s": 30,
    }  # fmt: skip
    assert view["ends_at"].endswith("Z") and view["opened_at"] < view["ends_at"]
    assert "4321" not in r.text and "reserve_price" not in r.text

    # read your write: the bid's position as X-Min-Position shows the bid
    placed = await m.bid(aid, ann, 4400)
    r = await stack.read.get(
        f"/v1/auctions/{aid}", headers={**ann.headers, "X-Min-Position": placed["position"]}
    )
    assert r.status_code == 200, r.text
    assert r.headers["X-Projection-Position"] >= placed["position"]
    view = r.json()
    assert (view["current_price"], view["leading_bidder_id"]) == (4400, ann.id)
    assert view["bid_count"] == 1
    assert view["reserve_met"] is True and view["minimum_bid"] == 4500
    assert "4321" not in r.text
    listed = await m.ok(ann, "/v1/auctions", seller_id=seller.id)
    assert listed["items"] == [{k: v for k, v in view.items() if k != "description"}]
    assert "4321" not in str(listed)

    # no reserve: met from the start; sold by buy-now, with its winner
    plain = await m.list(seller, buy_now_price=5000)
    assert (await m.ok(ann, f"/v1/auctions/{plain}"))["reserve_met"] is True
    await m.close(plain, ann, "buy-now")
    sold = await m.ok(seller, f"/v1/auctions/{plain}")
    assert (sold["status"], sold["close_reason"], sold["winner_id"], sold["current_price"]) == (
        "sold", "bought_now", ann.id, 5000,
    )  # fmt: skip
    assert sold["closed_at"] is not None and sold["minimum_bid"] is None


async def test_bids_newest_first_a_page_at_a_time(stack: Stack, pool: AsyncConnectionPool) -> None:
    seller, ann, bob = await users(stack, EventStore(pool), 3)
    m = Market(stack)
    aid = await m.list(seller)
    assert await m.ok(ann, f"/v1/auctions/{aid}/bids") == {"items": [], "next_cursor": None}
    placed = [await m.bid(aid, (ann, bob)[i % 2], 1000 + 100 * i) for i in range(5)]
    bids = await m.walk(seller, f"/v1/auctions/{aid}/bids")
    assert [b["amount"] for b in bids] == [1400, 1300, 1200, 1100, 1000]
    assert [b["bid_id"] for b in bids] == [p["bid_id"] for p in reversed(placed)]
    assert [b["bidder_id"] for b in bids] == [ann.id, bob.id, ann.id, bob.id, ann.id]
    assert set(bids[0]) == {"bid_id", "bidder_id", "amount", "currency", "placed_at"}
    assert bids[0]["currency"] == "EUR" and bids[0]["placed_at"] > bids[-1]["placed_at"]
    whole = await m.ok(ann, f"/v1/auctions/{aid}/bids", limit=200)
    assert whole["items"] == bids and whole["next_cursor"] is None


async def test_listing_filters_sorts_and_pages(stack: Stack, pool: AsyncConnectionPool) -> None:
    seller, other, ann = await users(stack, EventStore(pool), 3)
    m = Market(stack)
    category = f"cat-{uuid.uuid4().hex[:12]}"
    # listed in this order (newest last), ending in another order; one with equal ends
    minutes = [50, 10, 30, 10, 40]
    ids = [await m.list(seller, category=category, ends_at=ends_in(n)) for n in minutes]
    theirs = await m.list(other, category=category, ends_at=ends_in(20))
    mine_elsewhere = await m.list(seller, ends_at=ends_in(5))
    await m.close(ids[2], seller, "cancel")
    bought = await m.list(seller, category=category, ends_at=ends_in(60), buy_now_price=2000)
    await m.close(bought, ann, "buy-now")

    def ids_of(items: list[dict[str, Any]]) -> list[str]:
        return [a["auction_id"] for a in items]

    def by_end(*auctions: str) -> list[str]:  # equal ends: in auction id order
        every = [*ids, theirs, mine_elsewhere, bought]
        ends = dict(zip(every, [*minutes, 20, 5, 60], strict=True))
        return sorted(auctions, key=lambda a: (ends[a], uuid.UUID(a)))

    walk = m.walk
    every_one = await walk(ann, "/v1/auctions", category=category)
    assert ids_of(every_one) == by_end(*ids, theirs, bought)
    assert ids_of(await walk(ann, "/v1/auctions", category=category, sort="newest")) == [
        bought, theirs, *reversed(ids)
    ]  # fmt: skip
    opened = [await walk(ann, "/v1/auctions", category=category, status="open", sort=s)
              for s in ("ending_soon", "newest")]  # fmt: skip
    still_open = [ids[0], ids[1], ids[3], ids[4], theirs]
    assert ids_of(opened[0]) == by_end(*still_open)
    assert ids_of(opened[1]) == [theirs, ids[4], ids[3], ids[1], ids[0]]
    assert {a["status"] for a in opened[0]} == {"open"}
    closed = await walk(ann, "/v1/auctions", category=category, status="closed")
    assert ids_of(closed) == [ids[2], bought]
    assert [a["status"] for a in closed] == ["cancelled", "sold"]
    assert ids_of(await walk(ann, "/v1/auctions", seller_id=seller.id, sort="newest")) == [
        bought, mine_elsewhere, *reversed(ids)
    ]  # fmt: skip
    assert ids_of(
        await walk(ann, "/v1/auctions", seller_id=seller.id, category=category, status="open")
    ) == by_end(ids[0], ids[1], ids[3], ids[4])
    assert ids_of(await walk(ann, "/v1/auctions", seller_id=other.id)) == [theirs]
    everything = await m.ok(ann, "/v1/auctions", status="open", limit=200)
    assert mine_elsewhere in ids_of(everything["items"])
    assert bought not in ids_of(everything["items"])


async def test_bad_parameters_are_400(stack: Stack, pool: AsyncConnectionPool) -> None:
    seller, ann = await users(stack, EventStore(pool), 2)
    m = Market(stack)
    aid = await m.list(seller, category="bad-params")
    await m.list(seller, category="bad-params")
    for params in ({"status": "sold"}, {"sort": "oldest"}, {"limit": "0"}, {"limit": "201"},
                   {"limit": "many"}, {"seller_id": "ann"}, {"category": "Not A Category"},
                   {"category": ""}, {"category": "x" * 65}):  # fmt: skip
        body = assert_problem(await m.get(ann, "/v1/auctions", **params), 400, "validation_failed")
        assert body["errors"], (params, body)
    newest = await m.ok(ann, "/v1/auctions", category="bad-params", sort="newest", limit=1)
    assert newest["next_cursor"]
    # a cursor given out by one order is not one the other order takes
    r = await m.get(ann, "/v1/auctions", category="bad-params", cursor=newest["next_cursor"])
    assert_problem(r, 400, "invalid_cursor")
    deep = base64.urlsafe_b64encode(b'{"x":' + b'{"a":' * 3000 + b"1" + b"}" * 3001).decode()
    for bad in ("%%%", "nope", "e30", "WzEsMl0", "WyJuZXdlc3QiLDEsMl0", deep):
        assert_problem(await m.get(ann, "/v1/auctions", cursor=bad), 400, "invalid_cursor")
        r = await m.get(ann, f"/v1/auctions/{aid}/bids", cursor=bad)
        assert_problem(r, 400, "invalid_cursor")
    for params in ({"limit": "0"}, {"limit": "201"}):
        r = await m.get(ann, f"/v1/auctions/{aid}/bids", **params)
        assert_problem(r, 400, "validation_failed")
    r = await stack.read.get(f"/v1/auctions/{aid}", headers={**ann.headers, "X-Min-Position": "x"})
    assert_problem(r, 400, "invalid_position")


async def test_unknown_auctions_are_404_and_signed_out_callers_401(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    seller, ann = await users(stack, EventStore(pool), 2)
    m = Market(stack)
    aid = await m.list(seller)
    for missing in (str(uuid.uuid4()), seller.id, "not-a-uuid", "0"):
        for path in (f"/v1/auctions/{missing}", f"/v1/auctions/{missing}/bids"):
            assert_problem(await m.get(ann, path), 404, "auction_not_found")
    for path in ("/v1/auctions", f"/v1/auctions/{aid}", f"/v1/auctions/{aid}/bids"):
        assert_problem(await stack.read.get(path), 401, "unauthorized")
        r = await stack.read.get(path, headers={"Authorization": "Bearer not.a.token"})
        assert_problem(r, 401, "invalid_token")
        assert (await m.get(ann, path)).status_code == 200
