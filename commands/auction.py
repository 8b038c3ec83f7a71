"""The auction decider: opening, bidding with anti-sniping, buy-now, cancelling, closing.

Pure: ids and times arrive in the command. "No bid at or after the end" is judged by the
command's time, so a bid that arrives after `ends_at` is refused even if the closer has
not closed the auction yet.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import assert_never

import msgspec

from commands.errors import DomainError
from events.auction import (
    AuctionBoughtNow,
    AuctionCancelled,
    AuctionClosed,
    AuctionEvent,
    AuctionExtended,
    AuctionOpened,
    BidPlaced,
    minor_unit_digits,
)

MAX_AMOUNT = 10**15  # minor units; keeps every amount exact in a JavaScript client too
MAX_DURATION = timedelta(days=90)
MAX_ANTI_SNIPE_S = 3600


class InvalidAuction(DomainError):
    code = "invalid_auction"
    status = 422


class AuctionNotFound(DomainError):
    code = "auction_not_found"
    status = 404


class AuctionExists(DomainError):
    code = "auction_exists"
    status = 409


class AuctionIsClosed(DomainError):
    code = "auction_closed"
    status = 409


class BidTooLow(DomainError):
    code = "bid_too_low"
    status = 409


class SellerCannotBid(DomainError):
    code = "seller_cannot_bid"
    status = 403


class CurrencyMismatch(DomainError):
    code = "currency_mismatch"
    status = 422


class BuyNowUnavailable(DomainError):
    code = "buy_now_unavailable"
    status = 409


class NotTheSeller(DomainError):
    code = "forbidden"
    status = 403


class HasBids(DomainError):
    code = "auction_has_bids"
    status = 409


class NoAuction(msgspec.Struct, frozen=True):
    pass


class Open(msgspec.Struct, frozen=True, kw_only=True):
    auction_id: str
    seller_id: str
    currency: str
    starting_price: int
    min_increment: int
    reserve_price: int | None
    buy_now_price: int | None
    ends_at: datetime
    anti_snipe_s: int
    current_price: int | None = None
    leader_id: str | None = None
    bid_count: int = 0

    def minimum_bid(self) -> int:
        if self.current_price is None:
            return self.starting_price
        return self.current_price + self.min_increment


class Closed(msgspec.Struct, frozen=True, kw_only=True):
    auction_id: str
    outcome: str  # sold | unsold | cancelled


AuctionState = NoAuction | Open | Closed
INITIAL: AuctionState = NoAuction()


def evolve(state: AuctionState, event: AuctionEvent) -> AuctionState:
    """Fold one event into the auction's state; never fails."""
    match event:
        case AuctionOpened():
            return Open(
                auction_id=event.auction_id, seller_id=event.seller_id, currency=event.currency,
                starting_price=event.starting_price, min_increment=event.min_increment,
                reserve_price=event.reserve_price, buy_now_price=event.buy_now_price,
                ends_at=event.ends_at, anti_snipe_s=event.anti_snipe_s,
            )  # fmt: skip
        case BidPlaced():
            if not isinstance(state, Open):
                return state
            return msgspec.structs.replace(state, current_price=event.amount,
                                           leader_id=event.bidder_id, bid_count=state.bid_count + 1)  # fmt: skip
        case AuctionExtended():
            if not isinstance(state, Open):
                return state
            return msgspec.structs.replace(state, ends_at=event.ends_at)
        case AuctionBoughtNow():
            return state  # the AuctionClosed that follows it closes the auction
        case AuctionCancelled():
            return Closed(auction_id=event.auction_id, outcome="cancelled")
        case AuctionClosed():
            return Closed(auction_id=event.auction_id, outcome="sold" if event.sold else "unsold")
        case _:
            assert_never(event)


class OpenAuction(msgspec.Struct, frozen=True, kw_only=True):
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
    at: datetime


class PlaceBid(msgspec.Struct, frozen=True, kw_only=True):
    bid_id: str
    bidder_id: str
    amount: int
    currency: str | None = None  # when given, it must be the auction's
    at: datetime


class BuyNow(msgspec.Struct, frozen=True, kw_only=True):
    buyer_id: str
    at: datetime


class Cancel(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    at: datetime


class Close(msgspec.Struct, frozen=True, kw_only=True):
    """The closer's command: close if the end has passed (by `at`); else nothing."""

    at: datetime


AuctionCommand = OpenAuction | PlaceBid | BuyNow | Cancel | Close


def _validate(c: OpenAuction) -> None:
    problems = []
    for name, amount in (("starting_price", c.starting_price), ("min_increment", c.min_increment),
                         ("reserve_price", c.reserve_price), ("buy_now_price", c.buy_now_price)):  # fmt: skip
        if amount is not None and not 1 <= amount <= MAX_AMOUNT:
            problems.append({"field": name, "message": f"must be 1..{MAX_AMOUNT} minor units"})
    if c.reserve_price is not None and c.reserve_price < c.starting_price:
        problems.append({"field": "reserve_price", "message": "must be at least starting_price"})
    if c.buy_now_price is not None and c.buy_now_price < max(
        c.starting_price, c.reserve_price or 0
    ):
        problems.append({"field": "buy_now_price", "message": "must be at least the starting and reserve prices"})  # fmt: skip
    if c.ends_at <= c.at:
        problems.append({"field": "ends_at", "message": "must be in the future"})
    elif c.ends_at - c.at > MAX_DURATION:
        problems.append({"field": "ends_at", "message": f"must be within {MAX_DURATION.days} days"})
    if not 0 <= c.anti_snipe_s <= MAX_ANTI_SNIPE_S:
        problems.append({"field": "anti_snipe_s", "message": f"must be 0..{MAX_ANTI_SNIPE_S}"})
    if problems:
        raise InvalidAuction("the auction's terms are not valid", errors=problems)


def _open(state: AuctionState, at: datetime) -> Open:
    """The auction, if bids and purchases are still possible at `at`."""
    match state:
        case Open():
            if at >= state.ends_at:
                raise AuctionIsClosed("the auction has ended")
            return state
        case Closed():
            raise AuctionIsClosed("the auction is closed")
        case NoAuction():
            raise AuctionNotFound("no such auction")
        case _:
            assert_never(state)


def _close(state: Open, at: datetime, reason: str | None = None) -> AuctionClosed:
    sold = state.leader_id is not None and (
        state.reserve_price is None or (state.current_price or 0) >= state.reserve_price
    )
    why = "ended" if sold else "no_bids" if state.leader_id is None else "reserve_not_met"
    return AuctionClosed(
        auction_id=state.auction_id, seller_id=state.seller_id, sold=sold,
        reason=reason or why,  # type: ignore[arg-type]
        winner_id=state.leader_id if sold else None, price=state.current_price if sold else None,
        currency=state.currency, closed_at=at,
    )  # fmt: skip


def decide(command: AuctionCommand, state: AuctionState) -> list[AuctionEvent]:
    """Every rule of an auction's life."""
    match command:
        case OpenAuction():
            if not isinstance(state, NoAuction):
                raise AuctionExists("that auction exists")
            _validate(command)
            return [AuctionOpened(
                auction_id=command.auction_id, seller_id=command.seller_id, title=command.title,
                description=command.description, category=command.category,
                currency=command.currency, starting_price=command.starting_price,
                min_increment=command.min_increment, reserve_price=command.reserve_price,
                buy_now_price=command.buy_now_price, ends_at=command.ends_at,
                anti_snipe_s=command.anti_snipe_s, opened_at=command.at,
                currency_digits=minor_unit_digits(command.currency),
            )]  # fmt: skip
        case PlaceBid():
            auction = _open(state, command.at)
            if command.bidder_id == auction.seller_id:
                raise SellerCannotBid("the seller cannot bid on its own auction")
            if command.currency is not None and command.currency != auction.currency:
                raise CurrencyMismatch(f"this auction is in {auction.currency}")
            minimum = auction.minimum_bid()
            if command.amount < minimum:
                raise BidTooLow(f"the minimum bid is {minimum}", minimum_bid=minimum,
                                currency=auction.currency)  # fmt: skip
            outbid = auction.leader_id if auction.leader_id != command.bidder_id else None
            events: list[AuctionEvent] = [BidPlaced(
                auction_id=auction.auction_id, bid_id=command.bid_id, bidder_id=command.bidder_id,
                amount=command.amount, currency=auction.currency, outbid_id=outbid,
                placed_at=command.at,
            )]  # fmt: skip
            window = timedelta(seconds=auction.anti_snipe_s)
            if window and command.at + window > auction.ends_at:
                events.append(AuctionExtended(auction_id=auction.auction_id, bid_id=command.bid_id,
                                              previous_ends_at=auction.ends_at,
                                              ends_at=command.at + window))  # fmt: skip
            return events
        case BuyNow():
            auction = _open(state, command.at)
            if command.buyer_id == auction.seller_id:
                raise SellerCannotBid("the seller cannot buy its own auction")
            price = auction.buy_now_price
            if price is None or (auction.current_price or 0) >= price:
                raise BuyNowUnavailable("this auction cannot be bought now")
            bought = msgspec.structs.replace(
                auction, leader_id=command.buyer_id, current_price=price
            )
            return [
                AuctionBoughtNow(auction_id=auction.auction_id, buyer_id=command.buyer_id,
                                 price=price, currency=auction.currency, bought_at=command.at),
                _close(bought, command.at, "bought_now"),
            ]  # fmt: skip
        case Cancel():
            auction = _open(state, command.at)
            if command.actor_id != auction.seller_id:
                raise NotTheSeller("only the seller may cancel an auction")
            if auction.bid_count:
                raise HasBids("an auction with an accepted bid cannot be cancelled")
            return [AuctionCancelled(auction_id=auction.auction_id, cancelled_by=command.actor_id,
                                     cancelled_at=command.at)]  # fmt: skip
        case Close():
            if isinstance(state, Open) and command.at >= state.ends_at:
                return [_close(state, command.at)]
            return []  # not over yet, or closed already: closing twice is nothing
        case _:
            assert_never(command)
