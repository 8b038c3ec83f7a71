"""The auction decider, as specifications and against a simple model (Hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from commands import auction as au
from events.auction import (
    AuctionBoughtNow,
    AuctionCancelled,
    AuctionClosed,
    AuctionExtended,
    AuctionOpened,
    BidPlaced,
)
from tests.spec import Decider

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
END = T0 + timedelta(hours=1)
A, SELLER, ANN, BOB = "a1", "seller", "ann", "bob"

auction = Decider(au.decide, au.evolve, au.INITIAL)


def opened(**terms: object) -> AuctionOpened:
    fields: dict[str, object] = dict(auction_id=A, seller_id=SELLER, title="lamp", currency="EUR",
                                     starting_price=1000, min_increment=100, ends_at=END,
                                     opened_at=T0)  # fmt: skip
    return AuctionOpened(**{**fields, **terms})  # type: ignore[arg-type]


def bid(amount: int, bidder: str = ANN, at: datetime = T0, n: int = 1, **kw: object) -> au.PlaceBid:
    return au.PlaceBid(bid_id=f"b{n}", bidder_id=bidder, amount=amount, at=at, **kw)  # type: ignore[arg-type]


def placed(
    amount: int, bidder: str = ANN, at: datetime = T0, n: int = 1, outbid: str | None = None
) -> BidPlaced:
    return BidPlaced(auction_id=A, bid_id=f"b{n}", bidder_id=bidder, amount=amount, currency="EUR",
                     outbid_id=outbid, placed_at=at)  # fmt: skip


def open_command(**terms: object) -> au.OpenAuction:
    fields: dict[str, object] = dict(auction_id=A, seller_id=SELLER, title="lamp", currency="EUR",
                                     starting_price=1000, min_increment=100, ends_at=END, at=T0)  # fmt: skip
    return au.OpenAuction(**{**fields, **terms})  # type: ignore[arg-type]


def test_open_an_auction() -> None:
    auction.given().when(open_command()).then(opened())
    auction.given(opened()).when(open_command()).raises(au.AuctionExists)


def test_terms_are_checked() -> None:
    for bad in (dict(starting_price=0), dict(starting_price=-5), dict(min_increment=0),
                dict(starting_price=10**16), dict(reserve_price=500),
                dict(buy_now_price=900), dict(reserve_price=2000, buy_now_price=1500),
                dict(ends_at=T0), dict(ends_at=T0 - timedelta(seconds=1)),
                dict(ends_at=T0 + timedelta(days=400)), dict(anti_snipe_s=-1),
                dict(anti_snipe_s=10**6)):  # fmt: skip
        info = auction.given().when(open_command(**bad)).raises(au.InvalidAuction)
        assert info.value.extra["errors"], bad


def test_the_first_bid_meets_the_starting_price_then_each_the_increment() -> None:
    auction.given(opened()).when(bid(999)).raises(au.BidTooLow)
    auction.given(opened()).when(bid(1000)).then(placed(1000))
    info = auction.given(opened(), placed(1000)).when(bid(1099, BOB, n=2)).raises(au.BidTooLow)
    assert info.value.extra["minimum_bid"] == 1100
    auction.given(opened(), placed(1000)).when(bid(1100, BOB, n=2)).then(
        placed(1100, BOB, n=2, outbid=ANN)
    )
    # a leader raising its own bid displaces nobody
    auction.given(opened(), placed(1000)).when(bid(1500, n=2)).then(placed(1500, n=2))


def test_the_seller_cannot_bid_nor_anyone_at_or_after_the_end() -> None:
    auction.given(opened()).when(bid(5000, SELLER)).raises(au.SellerCannotBid)
    auction.given(opened()).when(bid(5000, at=END)).raises(au.AuctionIsClosed)
    auction.given(opened()).when(bid(5000, at=END + timedelta(seconds=1))).raises(
        au.AuctionIsClosed
    )
    auction.given().when(bid(5000)).raises(au.AuctionNotFound)
    auction.given(opened()).when(bid(5000, currency="USD")).raises(au.CurrencyMismatch)


def test_a_late_bid_extends_the_end_by_the_window() -> None:
    late = END - timedelta(seconds=10)
    auction.given(opened(anti_snipe_s=30)).when(bid(1000, at=late)).then(
        placed(1000, at=late),
        AuctionExtended(auction_id=A, bid_id="b1", previous_ends_at=END,
                        ends_at=late + timedelta(seconds=30)),
    )  # fmt: skip
    early = END - timedelta(seconds=31)
    auction.given(opened(anti_snipe_s=30)).when(bid(1000, at=early)).then(placed(1000, at=early))
    extended = AuctionExtended(auction_id=A, bid_id="b1", previous_ends_at=END,
                               ends_at=late + timedelta(seconds=30))  # fmt: skip
    # after the old end, before the new one: still open
    auction.given(opened(anti_snipe_s=30), placed(1000, at=late), extended).when(
        bid(1100, BOB, at=END + timedelta(seconds=5), n=2)
    ).then(
        placed(1100, BOB, at=END + timedelta(seconds=5), n=2, outbid=ANN),
        AuctionExtended(auction_id=A, bid_id="b2", previous_ends_at=late + timedelta(seconds=30),
                        ends_at=END + timedelta(seconds=35)),
    )  # fmt: skip


def test_closing_sells_to_the_leader_when_the_reserve_is_met() -> None:
    close = au.Close(at=END)
    auction.given(opened()).when(au.Close(at=END - timedelta(seconds=1))).then()
    auction.given(opened()).when(close).then(
        AuctionClosed(auction_id=A, seller_id=SELLER, sold=False, reason="no_bids",
                      currency="EUR", closed_at=END)
    )  # fmt: skip
    auction.given(opened(reserve_price=2000), placed(1500)).when(close).then(
        AuctionClosed(auction_id=A, seller_id=SELLER, sold=False, reason="reserve_not_met",
                      currency="EUR", closed_at=END)
    )  # fmt: skip
    sold = AuctionClosed(auction_id=A, seller_id=SELLER, sold=True, reason="ended", winner_id=ANN,
                         price=2000, currency="EUR", closed_at=END)  # fmt: skip
    auction.given(opened(reserve_price=2000), placed(2000)).when(close).then(sold)
    auction.given(opened(), placed(2000), sold).when(close).then()  # exactly once
    auction.given(opened(), placed(2000), sold).when(bid(9000, BOB, n=2)).raises(au.AuctionIsClosed)


def test_buy_now_closes_as_sold_while_the_price_is_below_it() -> None:
    terms = opened(buy_now_price=5000)
    auction.given(terms).when(au.BuyNow(buyer_id=BOB, at=T0)).then(
        AuctionBoughtNow(auction_id=A, buyer_id=BOB, price=5000, currency="EUR", bought_at=T0),
        AuctionClosed(auction_id=A, seller_id=SELLER, sold=True, reason="bought_now",
                      winner_id=BOB, price=5000, currency="EUR", closed_at=T0),
    )  # fmt: skip
    auction.given(terms, placed(5000)).when(au.BuyNow(buyer_id=BOB, at=T0)).raises(
        au.BuyNowUnavailable
    )
    auction.given(opened()).when(au.BuyNow(buyer_id=BOB, at=T0)).raises(au.BuyNowUnavailable)
    auction.given(terms).when(au.BuyNow(buyer_id=SELLER, at=T0)).raises(au.SellerCannotBid)


def test_only_the_seller_cancels_and_only_without_bids() -> None:
    cancelled = AuctionCancelled(auction_id=A, cancelled_by=SELLER, cancelled_at=T0)
    auction.given(opened()).when(au.Cancel(actor_id=SELLER, at=T0)).then(cancelled)
    auction.given(opened()).when(au.Cancel(actor_id=ANN, at=T0)).raises(au.NotTheSeller)
    auction.given(opened(), placed(1000)).when(au.Cancel(actor_id=SELLER, at=T0)).raises(au.HasBids)
    auction.given(opened(), cancelled).when(bid(1000)).raises(au.AuctionIsClosed)
    auction.given(opened(), cancelled).when(au.Close(at=END)).then()


class AuctionModel(RuleBasedStateMachine):
    """Random bids, buy-nows, cancels, closes and clock moves against a plain model."""

    def __init__(self) -> None:
        super().__init__()
        self.state: au.AuctionState = au.evolve(au.INITIAL, opened(anti_snipe_s=60, reserve_price=1500,
                                                                  buy_now_price=9000))  # fmt: skip
        self.now = T0
        self.n = 0
        # the model
        self.price: int | None = None
        self.leader: str | None = None
        self.end = END
        self.status = "open"
        self.accepted: list[int] = []

    def _apply(self, events: list[object]) -> None:
        for event in events:
            self.state = au.evolve(self.state, event)  # type: ignore[arg-type]

    @rule(seconds=st.integers(0, 1800))
    def tick(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(amount=st.integers(-10, 12_000), bidder=st.sampled_from([ANN, BOB, SELLER]))
    def place(self, amount: int, bidder: str) -> None:
        self.n += 1
        minimum = 1000 if self.price is None else self.price + 100
        should = (
            self.status == "open" and self.now < self.end and bidder != SELLER and amount >= minimum
        )
        try:
            events = au.decide(bid(amount, bidder, at=self.now, n=self.n), self.state)
        except (au.BidTooLow, au.AuctionIsClosed, au.SellerCannotBid):
            assert not should
            return
        assert should
        self._apply(events)
        self.price, self.leader = amount, bidder
        self.accepted.append(amount)
        if self.now + timedelta(seconds=60) > self.end:
            self.end = self.now + timedelta(seconds=60)

    @rule(buyer=st.sampled_from([ANN, BOB]))
    def buy(self, buyer: str) -> None:
        should = self.status == "open" and self.now < self.end and (self.price or 0) < 9000
        try:
            events = au.decide(au.BuyNow(buyer_id=buyer, at=self.now), self.state)
        except (au.BuyNowUnavailable, au.AuctionIsClosed):
            assert not should
            return
        assert should
        self._apply(events)
        self.status, self.leader, self.price = "sold", buyer, 9000

    @rule()
    def cancel(self) -> None:
        should = self.status == "open" and self.now < self.end and not self.accepted
        try:
            events = au.decide(au.Cancel(actor_id=SELLER, at=self.now), self.state)
        except (au.HasBids, au.AuctionIsClosed):
            assert not should
            return
        assert should
        self._apply(events)
        self.status = "cancelled"

    @rule()
    def close(self) -> None:
        events = au.decide(au.Close(at=self.now), self.state)
        if self.status != "open" or self.now < self.end:
            assert events == []
            return
        (closed,) = events
        assert isinstance(closed, AuctionClosed)
        sold = self.leader is not None and (self.price or 0) >= 1500
        assert closed.sold == sold and closed.winner_id == (self.leader if sold else None)
        self._apply(events)
        self.status = "sold" if sold else "unsold"

    @invariant()
    def agrees(self) -> None:
        assert all(b - a >= 100 for a, b in zip(self.accepted, self.accepted[1:], strict=False))
        match self.state:
            case au.Open():
                assert self.status == "open"
                assert (self.state.current_price, self.state.leader_id) == (self.price, self.leader)
                assert self.state.ends_at == self.end
            case au.Closed():
                assert self.status == self.state.outcome
            case _:
                raise AssertionError(self.state)


TestAuctionModel = AuctionModel.TestCase
TestAuctionModel.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
