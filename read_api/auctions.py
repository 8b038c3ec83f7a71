"""Auctions from the auctions read model: the listing (filtered by status, category and
seller; ending soon or newest first), one auction, and its accepted bids, newest first.

The reserve price is the seller's secret: views say whether it is met (`reserve_met`),
never what it is. An unknown or malformed auction id is the same 404 `auction_not_found`.

Listing cursors hold the sort's key of the last item and the sort's name, so a cursor
given out for one sort is refused (400 `invalid_cursor`) by the other. The key of
`ending_soon` can move under a reader (a late bid extends `ends_at`): an auction extended
between two pages may then be seen twice or not at all, as with any keyset on a changing
column; the pages themselves never repeat or skip an unchanged auction.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from psycopg import AsyncConnection

from infra.authz import Action
from infra.http import Problem
from read_api.consistency import fresh_enough
from read_api.paging import DEFAULT_LIMIT, AwareTime, Limit, decode_cursor, encode_cursor, page
from read_api.services import Services
from read_api.views import parse_id, text_id, utc

Status = Literal["open", "closed"]
Sort = Literal["ending_soon", "newest"]
StatusFilter = Annotated[
    Status | None,
    QueryParameter(description="open, or closed (sold, unsold or cancelled); all when absent"),
]
SortOrder = Annotated[
    Sort, QueryParameter(description="ending_soon: ends_at ascending; newest: opened_at descending")
]
# the write API's rule for categories: a filter that could never match is a mistake
Category = Annotated[
    str | None,
    QueryParameter(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$", description="category"),
]

_COLUMNS = (
    "auction_id, seller_id, title, description, category, currency, starting_price,"
    " min_increment, reserve_price, buy_now_price, anti_snipe_s, status, close_reason,"
    " current_price, leading_bidder_id, bid_count, ends_at, opened_at, closed_at, winner_id"
)
_ONE = f"SELECT {_COLUMNS} FROM rm_auctions.auctions WHERE auction_id = %s"
_EXISTS = "SELECT 1 FROM rm_auctions.auctions WHERE auction_id = %s"
_BIDS = (
    "SELECT bid_id, bidder_id, amount, currency, placed_at, stream_version"
    " FROM rm_auctions.bids WHERE auction_id = %s AND stream_version < %s"
    " ORDER BY stream_version DESC LIMIT %s"
)
# Status predicates are literals, not parameters, so that prepared (generic) plans can
# still use the partial indexes on open auctions.
_STATUS_SQL: dict[Status | None, str] = {
    None: "",
    "open": " AND status = 'open'",
    "closed": " AND status <> 'open'",
}
_SORT_SQL: dict[Sort, tuple[str, str]] = {
    "ending_soon": ("(ends_at, auction_id) > (%(at)s, %(id)s)", "ends_at, auction_id"),
    "newest": ("(opened_at, auction_id) < (%(at)s, %(id)s)", "opened_at DESC, auction_id DESC"),
}
# The keys a first page continues from: before every ending, after every opening.
_FIRST: dict[Sort, tuple[datetime, uuid.UUID]] = {
    "ending_soon": (datetime(1, 1, 1, tzinfo=UTC), uuid.UUID(int=0)),
    "newest": (datetime(9999, 12, 31, tzinfo=UTC), uuid.UUID(int=2**128 - 1)),
}
_NO_BID_YET = 2**62  # above every stream version: the first page of bids


@functools.cache
def _listing_sql(status: Status | None, by_category: bool, by_seller: bool, sort: Sort) -> str:
    """The listing query for one combination of filters (a few dozen texts at most, each
    prepared once per connection)."""
    after, order = _SORT_SQL[sort]
    where = after + _STATUS_SQL[status]
    if by_category:
        where += " AND category = %(category)s"
    if by_seller:
        where += " AND seller_id = %(seller)s"
    return (
        f"SELECT {_COLUMNS} FROM rm_auctions.auctions WHERE {where}"
        f" ORDER BY {order} LIMIT %(limit)s"
    )


@dataclass(frozen=True)
class Auction:
    """An auction as the read model has it (the reserve stays in here)."""

    auction_id: uuid.UUID
    seller_id: uuid.UUID
    title: str
    description: str
    category: str | None
    currency: str
    starting_price: int
    min_increment: int
    reserve_price: int | None
    buy_now_price: int | None
    anti_snipe_s: int
    status: str
    close_reason: str | None
    current_price: int | None
    leading_bidder_id: uuid.UUID | None
    bid_count: int
    ends_at: datetime
    opened_at: datetime
    closed_at: datetime | None
    winner_id: uuid.UUID | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Auction:
        """Build from a row selected with `_COLUMNS`."""
        return cls(
            auction_id=row[0], seller_id=row[1], title=row[2], description=row[3],
            category=row[4], currency=row[5], starting_price=row[6], min_increment=row[7],
            reserve_price=row[8], buy_now_price=row[9], anti_snipe_s=row[10], status=row[11],
            close_reason=row[12], current_price=row[13], leading_bidder_id=row[14],
            bid_count=row[15], ends_at=row[16], opened_at=row[17], closed_at=row[18],
            winner_id=row[19],
        )  # fmt: skip

    @property
    def reserve_met(self) -> bool:
        """Whether the current price would sell: always, when there is no reserve."""
        if self.reserve_price is None:
            return True
        return self.current_price is not None and self.current_price >= self.reserve_price

    @property
    def minimum_bid(self) -> int | None:
        """The least the next bid may be while the auction is open (the decider's rule)."""
        if self.status != "open":
            return None
        if self.current_price is None:
            return self.starting_price
        return self.current_price + self.min_increment

    def summary(self) -> dict[str, Any]:
        """The list item: everything but the description."""
        return {
            "auction_id": str(self.auction_id),
            "seller_id": str(self.seller_id),
            "title": self.title,
            "category": self.category,
            "currency": self.currency,
            "starting_price": self.starting_price,
            "min_increment": self.min_increment,
            "reserve_met": self.reserve_met,
            "buy_now_price": self.buy_now_price,
            "status": self.status,
            "close_reason": self.close_reason,
            "current_price": self.current_price,
            "minimum_bid": self.minimum_bid,
            "leading_bidder_id": text_id(self.leading_bidder_id),
            "bid_count": self.bid_count,
            "ends_at": utc(self.ends_at),
            "opened_at": utc(self.opened_at),
            "closed_at": utc(self.closed_at),
            "winner_id": text_id(self.winner_id),
            "anti_snipe_s": self.anti_snipe_s,
        }

    def detail(self) -> dict[str, Any]:
        """One auction: the list item and its description."""
        return {**self.summary(), "description": self.description}


def _not_found(headers: dict[str, str]) -> Problem:
    return Problem(404, "auction_not_found", "no such auction", headers=headers)


async def _known(conn: AsyncConnection[Any], auction_id: uuid.UUID) -> bool:
    cur = await conn.execute(_EXISTS, (auction_id,), prepare=True)
    return await cur.fetchone() is not None


@get(
    "/v1/auctions",
    tags=["auctions"],
    summary="Auctions, filtered by status, category and seller, ending soon or newest first",
    opt={"action": Action.READ_AUCTIONS},
)
async def list_auctions(
    request: Request[Any, Any, Any],
    services: NamedDependency[Services],
    status: StatusFilter = None,
    category: Category = None,
    seller_id: FromQuery[uuid.UUID | None] = None,
    sort: SortOrder = "ending_soon",
    limit: Limit = DEFAULT_LIMIT,
    cursor: FromQuery[str | None] = None,
) -> Response[dict[str, Any]]:
    """`{items, next_cursor}`: auctions as `GET /v1/auctions/{id}` shows them, without the
    description."""
    headers = await fresh_enough(request, services, ["auctions"])
    at, after = _FIRST[sort]
    if cursor:
        given, at, after = decode_cursor(cursor, tuple[str, AwareTime, uuid.UUID])
        if given != sort:
            raise Problem(400, "invalid_cursor", f"the cursor is not one the {sort} order gave out")
    query = _listing_sql(status, category is not None, seller_id is not None, sort)
    params = {"at": at, "id": after, "category": category, "seller": seller_id,
              "limit": limit + 1}  # fmt: skip
    async with services.pool.connection() as conn:
        cur = await conn.execute(query, params, prepare=True)
        rows, more = page(await cur.fetchall(), limit)
    auctions = [Auction.from_row(r) for r in rows]
    next_cursor = None
    if more:
        last = auctions[-1]
        key = last.ends_at if sort == "ending_soon" else last.opened_at
        next_cursor = encode_cursor((sort, key, last.auction_id))
    body = {"items": [a.summary() for a in auctions], "next_cursor": next_cursor}
    return Response(body, headers=headers)


@get(
    "/v1/auctions/{auction_id:str}",
    tags=["auctions"],
    summary="One auction: status, prices, leader, bid count, end, winner",
    opt={"action": Action.READ_AUCTIONS},
)
async def get_auction(
    request: Request[Any, Any, Any],
    auction_id: FromPath[str],
    services: NamedDependency[Services],
) -> Response[dict[str, Any]]:
    """`{auction_id, seller_id, title, description, category, currency, starting_price,
    min_increment, reserve_met, buy_now_price, status, close_reason, current_price,
    minimum_bid, leading_bidder_id, bid_count, ends_at, opened_at, closed_at, winner_id,
    anti_snipe_s}`; `current_price` is null until the first bid, `minimum_bid` while open."""
    headers = await fresh_enough(request, services, ["auctions"])
    aid = parse_id(auction_id)
    row = None
    if aid is not None:
        async with services.pool.connection() as conn:
            cur = await conn.execute(_ONE, (aid,), prepare=True)
            row = await cur.fetchone()
    if row is None:
        raise _not_found(headers)
    return Response(Auction.from_row(row).detail(), headers=headers)


@get(
    "/v1/auctions/{auction_id:str}/bids",
    tags=["auctions"],
    summary="An auction's accepted bids, newest first",
    opt={"action": Action.READ_AUCTIONS},
)
async def list_bids(
    request: Request[Any, Any, Any],
    auction_id: FromPath[str],
    services: NamedDependency[Services],
    limit: Limit = DEFAULT_LIMIT,
    cursor: FromQuery[str | None] = None,
) -> Response[dict[str, Any]]:
    """`{items: [{bid_id, bidder_id, amount, currency, placed_at}], next_cursor}`, in the
    order the auction accepted them, newest first."""
    headers = await fresh_enough(request, services, ["auctions"])
    aid = parse_id(auction_id)
    if aid is None:
        raise _not_found(headers)
    (before,) = decode_cursor(cursor, tuple[int]) if cursor else (_NO_BID_YET,)
    async with services.pool.connection() as conn:
        cur = await conn.execute(_BIDS, (aid, before, limit + 1), prepare=True)
        rows, more = page(await cur.fetchall(), limit)
        # an empty page is the one case where the auction itself may not exist
        if not rows and not await _known(conn, aid):
            raise _not_found(headers)
    items = [
        {"bid_id": str(r[0]), "bidder_id": str(r[1]), "amount": r[2], "currency": r[3],
         "placed_at": utc(r[4])}
        for r in rows
    ]  # fmt: skip
    next_cursor = encode_cursor((rows[-1][5],)) if more else None
    return Response({"items": items, "next_cursor": next_cursor}, headers=headers)
