"""What happens to auctions. Stream: `auction-<auction_id>`. Money is an integer count of
minor units of the auction's ISO 4217 `currency`, never a float."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

CloseReason = Literal["ended", "bought_now", "no_bids", "reserve_not_met"]


# ISO 4217 currencies whose minor unit is not a hundredth (the rest have two digits).
_MINOR_UNIT_DIGITS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF",
                     "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}  # fmt: skip


def minor_unit_digits(currency: str) -> int:
    """How many decimal digits the minor unit of an ISO 4217 currency has (JPY 0, EUR 2)."""
    return _MINOR_UNIT_DIGITS.get(currency, 2)


class AuctionOpened(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """An auction is open for bids until `ends_at`.

    Schema version 2 added `currency_digits`, the decimal digits of the currency's minor
    unit (so clients can show `1500` JPY as 1,500 and `1500` EUR as 15.00 without a
    table of their own); version 1 events are upcast in events.registry.
    """

    auction_id: str
    seller_id: str
    title: str
    description: str = ""
    category: str | None = None
    currency: str
    starting_price: int
    min_increment: int
    reserve_price: int | None = None
    buy_now_price: int | None = None
    ends_at: datetime
    anti_snipe_s: int = 0
    opened_at: datetime
    currency_digits: int = 2


class BidPlaced(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """An accepted bid: the auction's new current price. `outbid_id` is the leader it
    displaced (None for the first bid, or when the leader raised its own bid)."""

    auction_id: str
    bid_id: str
    bidder_id: str
    amount: int
    currency: str
    outbid_id: str | None = None
    placed_at: datetime


class AuctionExtended(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A bid within the anti-snipe window moved the end to its time plus the window."""

    auction_id: str
    bid_id: str
    previous_ends_at: datetime
    ends_at: datetime


class AuctionBoughtNow(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A buyer took the buy-now price; an AuctionClosed (sold) follows in the same append."""

    auction_id: str
    buyer_id: str
    price: int
    currency: str
    bought_at: datetime


class AuctionCancelled(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    auction_id: str
    cancelled_by: str
    cancelled_at: datetime


class AuctionClosed(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The auction is over: `sold` to `winner_id` at `price`, or ended without sale
    (`reason`: no_bids or reserve_not_met). Appended once, by the closer or a buy-now."""

    auction_id: str
    seller_id: str
    sold: bool
    reason: CloseReason
    winner_id: str | None = None
    price: int | None = None
    currency: str
    closed_at: datetime


AuctionEvent = (
    AuctionOpened
    | BidPlaced
    | AuctionExtended
    | AuctionBoughtNow
    | AuctionCancelled
    | AuctionClosed
)


def auction_stream(auction_id: str) -> str:
    return f"auction-{auction_id}"
