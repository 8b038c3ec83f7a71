"""The auctions read model: the listing (status, current price, leader, bid count, end)
and every accepted bid. The scheduler also reads it to find auctions due to close.

Idempotence: every change to an auction row is guarded by the stream version the row has
seen; bids insert or do nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import sql

from events.auction import (
    AuctionBoughtNow,
    AuctionCancelled,
    AuctionClosed,
    AuctionExtended,
    AuctionOpened,
    BidPlaced,
)
from events.envelope import Envelope
from events.registry import decode
from infra.pipeline import Statements
from projections.batching import Runs

name = "auctions"
version = 2  # 2: an index per listing order (read_api/auctions.py)
types = frozenset(
    {"AuctionOpened", "BidPlaced", "AuctionExtended", "AuctionBoughtNow", "AuctionCancelled",
     "AuctionClosed"}
)  # fmt: skip


def ddl(schema: str) -> list[str]:
    """Auctions (indexed for each filter and sort of the listing, and for the closer) and
    accepted bids."""
    s = sql.Identifier(schema).as_string()
    return [
        f"CREATE TABLE {s}.auctions ("
        " auction_id uuid PRIMARY KEY, seller_id uuid NOT NULL, title text NOT NULL,"
        " description text NOT NULL, category text, currency text NOT NULL,"
        " starting_price bigint NOT NULL, min_increment bigint NOT NULL,"
        " reserve_price bigint, buy_now_price bigint, anti_snipe_s integer NOT NULL,"
        " status text NOT NULL,"  # open | sold | unsold | cancelled
        " close_reason text, current_price bigint, leading_bidder_id uuid,"
        " bid_count integer NOT NULL DEFAULT 0, ends_at timestamptz NOT NULL,"
        " opened_at timestamptz NOT NULL, closed_at timestamptz, winner_id uuid,"
        " stream_version bigint NOT NULL)",
        # Each listing order has an index in that order (read backwards for `newest`), so
        # a page is a short index range scan. Where a status filter would otherwise walk
        # past the other kind (open auctions end after every closed one; closed ones
        # opened before every open one), a partial index skips them. The closer's due
        # query uses auctions_open_ends too. None of these columns changes when a bid is
        # applied, so the hot path stays a HOT update.
        f"CREATE INDEX auctions_open_ends ON {s}.auctions (ends_at, auction_id)"
        " WHERE status = 'open'",
        f"CREATE INDEX auctions_closed_newest ON {s}.auctions (opened_at, auction_id)"
        " WHERE status <> 'open'",
        f"CREATE INDEX auctions_ends ON {s}.auctions (ends_at, auction_id)",
        f"CREATE INDEX auctions_newest ON {s}.auctions (opened_at, auction_id)",
        f"CREATE INDEX auctions_category_open_ends ON {s}.auctions (category, ends_at, auction_id)"
        " WHERE status = 'open'",
        f"CREATE INDEX auctions_category_ends ON {s}.auctions (category, ends_at, auction_id)",
        f"CREATE INDEX auctions_category_newest ON {s}.auctions (category, opened_at, auction_id)",
        f"CREATE INDEX auctions_seller_ends ON {s}.auctions (seller_id, ends_at, auction_id)",
        f"CREATE INDEX auctions_seller_newest ON {s}.auctions (seller_id, opened_at, auction_id)",
        f"CREATE TABLE {s}.bids ("
        " bid_id uuid PRIMARY KEY, auction_id uuid NOT NULL, bidder_id uuid NOT NULL,"
        " amount bigint NOT NULL, currency text NOT NULL, placed_at timestamptz NOT NULL,"
        " stream_version bigint NOT NULL)",
        f"CREATE INDEX bids_by_auction ON {s}.bids (auction_id, stream_version DESC)",
    ]


@dataclass(frozen=True)
class _Statements:
    opened: sql.Composed
    bid: sql.Composed
    bid_row: sql.Composed
    extended: sql.Composed
    closed: sql.Composed
    cancelled: sql.Composed


@functools.cache
def _statements(schema: str) -> _Statements:
    def q(text: str) -> sql.Composed:
        return sql.SQL(text).format(s=sql.Identifier(schema))

    guard = " WHERE auction_id = %(a)s::uuid AND stream_version < %(v)s"
    return _Statements(
        opened=q(
            "INSERT INTO {s}.auctions (auction_id, seller_id, title, description, category,"
            " currency, starting_price, min_increment, reserve_price, buy_now_price,"
            " anti_snipe_s, status, ends_at, opened_at, stream_version) VALUES (%s, %s, %s, %s,"
            " %s, %s, %s, %s, %s, %s, %s, 'open', %s, %s, %s) ON CONFLICT DO NOTHING"
        ),
        bid=q(
            "UPDATE {s}.auctions SET current_price = %(amount)s, leading_bidder_id = %(b)s,"
            " bid_count = bid_count + 1, stream_version = %(v)s" + guard
        ),
        bid_row=q(
            "INSERT INTO {s}.bids (bid_id, auction_id, bidder_id, amount, currency, placed_at,"
            " stream_version) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
        ),
        extended=q("UPDATE {s}.auctions SET ends_at = %(ends)s, stream_version = %(v)s" + guard),
        closed=q(
            "UPDATE {s}.auctions SET status = %(status)s, close_reason = %(reason)s,"
            " winner_id = %(winner)s, current_price = coalesce(%(price)s, current_price),"
            " closed_at = %(at)s, stream_version = %(v)s" + guard
        ),
        cancelled=q(
            "UPDATE {s}.auctions SET status = 'cancelled', close_reason = 'cancelled',"
            " closed_at = %(at)s, stream_version = %(v)s" + guard
        ),
    )


async def apply(conn: Statements, schema: str, events: Sequence[Envelope]) -> None:
    """Listing rows and bids, in event order, as few round trips as the order allows."""
    q = _statements(schema)
    runs = Runs(conn)
    bids = []  # no later statement reads them: inserted together at the end
    for envelope in events:
        event = decode(envelope.type, envelope.schema_version, envelope.data)
        v = envelope.stream_version
        match event:
            case AuctionOpened():
                await runs.add(q.opened, (
                    event.auction_id, event.seller_id, event.title, event.description,
                    event.category, event.currency, event.starting_price, event.min_increment,
                    event.reserve_price, event.buy_now_price, event.anti_snipe_s, event.ends_at,
                    event.opened_at, v,
                ))  # fmt: skip
            case BidPlaced():
                await runs.add(q.bid, {"amount": event.amount, "b": event.bidder_id,
                                       "a": event.auction_id, "v": v})  # fmt: skip
                bids.append((event.bid_id, event.auction_id, event.bidder_id, event.amount,
                             event.currency, event.placed_at, v))  # fmt: skip
            case AuctionExtended():
                await runs.add(q.extended, {"ends": event.ends_at, "a": event.auction_id, "v": v})
            case AuctionClosed():
                await runs.add(q.closed, {
                    "status": "sold" if event.sold else "unsold", "reason": event.reason,
                    "winner": event.winner_id, "price": event.price, "at": event.closed_at,
                    "a": event.auction_id, "v": v,
                })  # fmt: skip
            case AuctionCancelled():
                await runs.add(
                    q.cancelled, {"at": event.cancelled_at, "a": event.auction_id, "v": v}
                )
            case AuctionBoughtNow():
                pass  # the AuctionClosed that follows it says everything the listing shows
            case _:
                pass
    await runs.flush()
    if bids:
        await conn.executemany(q.bid_row, bids)
