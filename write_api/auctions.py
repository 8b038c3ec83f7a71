"""Auction commands: list, bid, buy now, cancel (CONTRACT.md, Write API).

Bids go through the process's auction sequencer: a hot auction's concurrent bids are
decided one after another on its current state, so two bids can never both take the same
step, and appended together.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from uuid_utils.compat import uuid7

from commands import auction as au
from events.auction import AuctionEvent, BidPlaced, auction_stream
from infra.auth import Principal
from infra.authz import Action
from infra.http import Problem, strictly
from infra.store import NO_STREAM, StreamAppend
from write_api.channels import command_context
from write_api.handling import Decision, answer, execute, new_events, path_id
from write_api.services import Services

# ISO 4217 codes in use (2024); money never leaves this list.
CURRENCIES = frozenset(
    [
        "AED",
        "AFN",
        "ALL",
        "AMD",
        "ANG",
        "AOA",
        "ARS",
        "AUD",
        "AWG",
        "AZN",
        "BAM",
        "BBD",
        "BDT",
        "BGN",
        "BHD",
        "BIF",
        "BMD",
        "BND",
        "BOB",
        "BRL",
        "BSD",
        "BTN",
        "BWP",
        "BYN",
        "BZD",
        "CAD",
        "CDF",
        "CHF",
        "CLP",
        "CNY",
        "COP",
        "CRC",
        "CUP",
        "CVE",
        "CZK",
        "DJF",
        "DKK",
        "DOP",
        "DZD",
        "EGP",
        "ERN",
        "ETB",
        "EUR",
        "FJD",
        "FKP",
        "GBP",
        "GEL",
        "GHS",
        "GIP",
        "GMD",
        "GNF",
        "GTQ",
        "GYD",
        "HKD",
        "HNL",
        "HTG",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "IQD",
        "IRR",
        "ISK",
        "JMD",
        "JOD",
        "JPY",
        "KES",
        "KGS",
        "KHR",
        "KMF",
        "KPW",
        "KRW",
        "KWD",
        "KYD",
        "KZT",
        "LAK",
        "LBP",
        "LKR",
        "LRD",
        "LSL",
        "LYD",
        "MAD",
        "MDL",
        "MGA",
        "MKD",
        "MMK",
        "MNT",
        "MOP",
        "MRU",
        "MUR",
        "MVR",
        "MWK",
        "MXN",
        "MYR",
        "MZN",
        "NAD",
        "NGN",
        "NIO",
        "NOK",
        "NPR",
        "NZD",
        "OMR",
        "PAB",
        "PEN",
        "PGK",
        "PHP",
        "PKR",
        "PLN",
        "PYG",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "RWF",
        "SAR",
        "SBD",
        "SCR",
        "SDG",
        "SEK",
        "SGD",
        "SHP",
        "SLE",
        "SOS",
        "SRD",
        "SSP",
        "STN",
        "SVC",
        "SYP",
        "SZL",
        "THB",
        "TJS",
        "TMT",
        "TND",
        "TOP",
        "TRY",
        "TTD",
        "TWD",
        "TZS",
        "UAH",
        "UGX",
        "USD",
        "UYU",
        "UZS",
        "VES",
        "VND",
        "VUV",
        "WST",
        "XAF",
        "XCD",
        "XOF",
        "XPF",
        "YER",
        "ZAR",
        "ZMW",
        "ZWL",
    ]
)

Amount = Annotated[int, msgspec.Meta(ge=1, le=au.MAX_AMOUNT)]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"\S")]
Description = Annotated[str, msgspec.Meta(max_length=5000)]
Category = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
Moment = Annotated[datetime, msgspec.Meta(tz=True)]
AntiSnipe = Annotated[int, msgspec.Meta(ge=0, le=au.MAX_ANTI_SNIPE_S)]


class OpenBody(msgspec.Struct, forbid_unknown_fields=True):
    title: Title
    currency: Currency
    starting_price: Amount
    min_increment: Amount
    ends_at: Moment
    description: Description = ""
    category: Category | None = None
    reserve_price: Amount | None = None
    buy_now_price: Amount | None = None
    anti_snipe_s: AntiSnipe = 0


class BidBody(msgspec.Struct, forbid_unknown_fields=True):
    amount: Amount
    currency: Currency | None = None


def auction_id_of(raw: str) -> str:
    return path_id(raw, "auction_not_found", "no such auction")


def known_currency(code: str | None) -> None:
    if code is not None and code not in CURRENCIES:
        raise Problem(400, "validation_failed", f"{code} is not an ISO 4217 currency",
                      errors=[{"field": "currency", "message": "not an ISO 4217 currency"}])  # fmt: skip


@post("/v1/auctions", status_code=201, tags=["auctions"], summary="List an auction",
      opt={"action": Action.AUCTION})  # fmt: skip
async def open_auction(
    request: Request[Any, Any, Any], data: JSONBody[OpenBody],
    services: NamedDependency[Services], principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:  # fmt: skip
    """201 `{auction_id, position}`; the caller is the seller."""
    data = await strictly(request, data)
    known_currency(data.currency)
    meta, idem = command_context(request, services, principal, data)
    auction_id = str(uuid7())
    command = au.OpenAuction(
        auction_id=auction_id, seller_id=principal.user_id, title=data.title,
        description=data.description, category=data.category, currency=data.currency,
        starting_price=data.starting_price, min_increment=data.min_increment,
        reserve_price=data.reserve_price, buy_now_price=data.buy_now_price,
        ends_at=data.ends_at.astimezone(UTC), anti_snipe_s=data.anti_snipe_s, at=datetime.now(UTC),
    )  # fmt: skip

    async def attempt() -> Decision:
        events = au.decide(command, au.INITIAL)
        append = StreamAppend(auction_stream(auction_id), NO_STREAM, new_events(events, meta))
        return Decision([append], {"auction_id": auction_id})

    return answer(await execute(services.store, attempt, idem), 201)


def _bid_answer(events: Sequence[AuctionEvent], after: au.AuctionState) -> dict[str, Any]:
    placed = events[0]
    assert isinstance(placed, BidPlaced) and isinstance(after, au.Open)
    return {"bid_id": placed.bid_id, "amount": placed.amount, "ends_at": after.ends_at}


@post("/v1/auctions/{auction_id:str}/bids", status_code=201, tags=["auctions"],
      summary="Bid", opt={"action": Action.AUCTION})  # fmt: skip
async def place_bid(
    request: Request[Any, Any, Any], auction_id: FromPath[str], data: JSONBody[BidBody],
    services: NamedDependency[Services], principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:  # fmt: skip
    """201 `{bid_id, position, ends_at}`; 409 bid_too_low (with minimum_bid), 409
    auction_closed, 403 seller_cannot_bid."""
    aid = auction_id_of(auction_id)
    data = await strictly(request, data)
    known_currency(data.currency)
    meta, idem = command_context(request, services, principal, data)
    stream = auction_stream(aid)
    command = au.PlaceBid(bid_id=str(uuid7()), bidder_id=principal.user_id, amount=data.amount,
                          currency=data.currency, at=datetime.now(UTC))  # fmt: skip
    outcome = await services.auctions.submit(
        stream, command, meta=meta, idem=idem, respond=_bid_answer
    )
    return answer(outcome, 201)


@post("/v1/auctions/{auction_id:str}/buy-now", status_code=200, tags=["auctions"],
      summary="Buy at the buy-now price", opt={"action": Action.AUCTION})  # fmt: skip
async def buy_now(
    request: Request[Any, Any, Any], auction_id: FromPath[str],
    services: NamedDependency[Services], principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:  # fmt: skip
    """Closes the auction as sold to the caller."""
    aid = auction_id_of(auction_id)
    meta, idem = command_context(request, services, principal, {})
    command = au.BuyNow(buyer_id=principal.user_id, at=datetime.now(UTC))
    outcome = await services.auctions.submit(auction_stream(aid), command, meta=meta, idem=idem,
                                             respond=lambda *_: {"auction_id": aid, "sold": True})  # fmt: skip
    return answer(outcome, 200)


@post("/v1/auctions/{auction_id:str}/cancel", status_code=200, tags=["auctions"],
      summary="Cancel (the seller, while no bid was accepted)", opt={"action": Action.AUCTION})  # fmt: skip
async def cancel(
    request: Request[Any, Any, Any], auction_id: FromPath[str],
    services: NamedDependency[Services], principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:  # fmt: skip
    """Cancel the caller's own auction; 409 auction_has_bids once a bid was accepted."""
    aid = auction_id_of(auction_id)
    meta, idem = command_context(request, services, principal, {})
    command = au.Cancel(actor_id=principal.user_id, at=datetime.now(UTC))
    outcome = await services.auctions.submit(auction_stream(aid), command, meta=meta, idem=idem,
                                             respond=lambda *_: {"auction_id": aid})  # fmt: skip
    return answer(outcome, 200)
