"""Auction figures over HTTP, through Hubbub's own processes on a scratch database, driven
by bench.http1 on a loop of its own (the machinery is bench/chat_stack.py's).

`auction_hot`: bid decisions/s on one auction that HOT_BIDDERS bidders bid on at once,
closed loop. Each bidder bids the least it believes will be accepted: the current price
plus the increment (after its own 201, its amount plus the increment; after a 409
`bid_too_low`, the `minimum_bid` the refusal names). Accepted and refused bids are both
decisions. Afterwards the auction's stream must show accepted amounts strictly rising by
at least the increment (the first at least the starting price), every 201's bid with the
amount it was answered for, and no other bid (else the workload fails).

`auction_bid_to_visible`: at a steady offered rate (open loop: each bid is sent at its
scheduled time whatever the earlier ones are doing), the time from a bid's scheduled send
until the read API answers `GET /v1/auctions/{id}` with `X-Min-Position` = the bid's
position, showing a current price of at least the bid. The bids go round VISIBLE_AUCTIONS
auctions, two bidders each taking turns, each bid one increment above the last on its
auction. A bid overtaken by the next one on its auction (held up for longer than the
0.8 s between them) is refused and made again at the `minimum_bid` the refusal names,
its clock still running; the notes count them. Write API, read API, relay, projector, NATS
and PostgreSQL all share the machine with the client.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import msgspec

from bench.chat_stack import (
    SETUP_CONNECTIONS,
    Member,
    Stack,
    checked,
    cpu_result,
    on_own_loop,
    percentiles_ms,
    register,
    stack,
    window,
)
from bench.context import QUICK, BenchContext
from bench.http1 import Connection, HttpError, expect, request_bytes
from bench.result import Result
from bench.timing import open_loop
from events.auction import BidPlaced, auction_stream
from events.registry import decode

HOT_SECONDS_FULL = 30.0
HOT_SECONDS_QUICK = 5.0
VISIBLE_SECONDS_FULL = 10.0
VISIBLE_SECONDS_QUICK = 3.0
WARMUP_S = 2.0  # load before the window opens: connections, caches, the sequencer's state
START_MARGIN_S = 0.2  # from handing the load to its loop until its first request

STARTING_PRICE = 1_000
INCREMENT = 10

HOT_BIDDERS = 200

# Bids/s offered. A rate the whole stack keeps up with on the 2-core reference machine, so
# that the figure is the path's latency: at 1,000/s (chat_send_to_visible's rate) it serves
# some 300-350 bids/s, the queues grow for as long as the run lasts, and the "latency" is
# the run's length.
VISIBLE_RATE = 250.0
# Bids on one auction are VISIBLE_AUCTIONS / VISIBLE_RATE = 0.8 s apart: each is decided
# long before the next on its auction is sent, so the amounts the schedule gives (one
# increment a step) are accepted in order, as a real auction's would be.
VISIBLE_AUCTIONS = 200
VISIBLE_SELLERS = 20
VISIBLE_WARMUP = 400  # bids sent and seen before the run, closed loop, 10 at a time
VISIBLE_CONNECTIONS = 512  # per API, at most; more requests in flight queue in the client
VISIBLE_WAIT_MS = 10_000  # X-Wait-Ms: a slow read model shows as latency, not as 503s
TARGET_VISIBLE_P99_MS = 25.0


class _Opened(msgspec.Struct):
    auction_id: str


class _Placed(msgspec.Struct):
    bid_id: str
    position: str


class _Refused(msgspec.Struct):
    code: str
    minimum_bid: int | None = None


class _View(msgspec.Struct):
    current_price: int | None
    bid_count: int


OPENED = msgspec.json.Decoder(_Opened)
PLACED = msgspec.json.Decoder(_Placed)
REFUSED = msgspec.json.Decoder(_Refused)
VIEW = msgspec.json.Decoder(_View)


async def open_auctions(stack: Stack, sellers: Sequence[Member]) -> list[str]:
    """An auction per seller (an hour long, no anti-sniping), listed over HTTP; their ids."""
    pool = stack.write_pool(SETUP_CONNECTIONS)
    ends_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    terms = msgspec.json.encode({"title": "Bench lot", "currency": "EUR", "ends_at": ends_at,
                                 "starting_price": STARTING_PRICE, "min_increment": INCREMENT})  # fmt: skip

    async def one(index: int, seller: Member) -> str:
        listing = request_bytes("POST", "/v1/auctions", stack.write_host, seller.auth, terms)
        async with pool.connection() as conn:
            body = await expect(conn, listing, 201, lambda: f"list auction {index}")
        return OPENED.decode(body).auction_id

    try:
        return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(sellers))))
    finally:
        pool.close()


def _bid_request(stack: Stack, auction_id: str, bidder: Member, amount: int) -> bytes:
    return request_bytes("POST", f"/v1/auctions/{auction_id}/bids", stack.write_host,
                         bidder.auth, b'{"amount":%d}' % amount)  # fmt: skip


# --- closed loop: auction_hot ----------------------------------------------------------


@dataclass
class _Bids:
    """One bidder's decisions: (start, end, accepted) perf_counter pairs, and the bids
    answered 201 with their amounts."""

    times: list[tuple[float, float, bool]] = field(default_factory=list)
    accepted: dict[str, int] = field(default_factory=dict)


async def _bidder(stack: Stack, auction_id: str, bidder: Member, until: float) -> _Bids:
    """One connection bidding the least that can win until `until`; every answer must be
    a 201 or a 409 `bid_too_low`."""
    conn = await Connection.open("127.0.0.1", stack.settings.write_api_port)
    bids = _Bids()
    amount = STARTING_PRICE
    try:
        while (start := time.perf_counter()) < until:
            response = await conn.request(_bid_request(stack, auction_id, bidder, amount))
            end = time.perf_counter()
            if response.status == 201:
                bids.accepted[PLACED.decode(response.body).bid_id] = amount
                bids.times.append((start, end, True))
                amount += INCREMENT
                continue
            refused = REFUSED.decode(response.body) if response.status == 409 else None
            if refused is None or refused.code != "bid_too_low" or refused.minimum_bid is None:
                raise HttpError(f"bid {amount}: {response.status} {response.body[:300]!r}")
            bids.times.append((start, end, False))
            amount = refused.minimum_bid
    finally:
        conn.close()
    return bids


async def _verify_hot(s: Stack, auction_id: str, bids: list[_Bids], headers: dict[str, str]) -> str:
    """The auction's BidPlaced events are exactly the 201s (same ids, same amounts), in
    amounts rising by at least INCREMENT from at least STARTING_PRICE; what was checked.
    RuntimeError naming what is not so."""
    recorded = await s.store.read_stream(auction_stream(auction_id))
    placed = [e for e in (decode(r.type, r.schema_version, r.data) for r in recorded)
              if isinstance(e, BidPlaced)]  # fmt: skip
    answered: dict[str, int] = {}
    for b in bids:
        answered.update(b.accepted)
    problems = []
    if not placed:
        problems.append("no bid was accepted")
    elif placed[0].amount < STARTING_PRICE:
        problems.append(f"the first accepted bid {placed[0].amount} is below the starting price")
    steps = [(a.amount, b.amount) for a, b in itertools.pairwise(placed)
             if b.amount < a.amount + INCREMENT]  # fmt: skip
    if steps:
        problems.append(f"{len(steps)} accepted bids rose by less than {INCREMENT}: {steps[:3]}")
    stored = {e.bid_id: e.amount for e in placed}
    if len(stored) != len(placed):
        problems.append("a bid id appears twice in the stream")
    missing = answered.keys() - stored.keys()
    if missing:
        problems.append(f"{len(missing)} bids answered 201 are not in the stream")
    extra = stored.keys() - answered.keys()
    if extra:
        problems.append(f"{len(extra)} bids in the stream were never answered 201")
    wrong = [b for b in answered.keys() & stored.keys() if answered[b] != stored[b]]
    if wrong:
        problems.append(f"{len(wrong)} bids stored with another amount than answered")
    history = await _bid_history(s, auction_id, headers)
    if history != stored:
        problems.append(f"the read API's bid history ({len(history)} bids) is not the stream's "
                        f"({len(stored)})")  # fmt: skip
    if problems:
        raise RuntimeError("; ".join(problems))
    return (f"stream and read API bid history hold exactly the {len(placed)} 201s (warm-up "
            f"included), amounts {placed[0].amount}..{placed[-1].amount} rising by >= "
            f"{INCREMENT}: pass")  # fmt: skip


async def _bid_history(s: Stack, auction_id: str, headers: dict[str, str]) -> dict[str, int]:
    """bid id -> amount, as GET /v1/auctions/{id}/bids pages them once the read models
    have everything the store has."""
    head = (await s.store.head()).token()
    found: dict[str, int] = {}
    cursor = None
    async with httpx.AsyncClient(base_url=f"http://{s.read_host}", timeout=30) as client:
        while True:
            params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
            r = await client.get(f"/v1/auctions/{auction_id}/bids", params=params,
                                 headers={**headers, "X-Min-Position": head, "X-Wait-Ms": "10000"})  # fmt: skip
            r.raise_for_status()
            page = r.json()
            found.update((b["bid_id"], b["amount"]) for b in page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                return found


async def auction_hot(ctx: BenchContext) -> Result:
    """Bid decisions/s on one auction, HOT_BIDDERS bidders each bidding in a closed loop."""
    seconds = HOT_SECONDS_QUICK if ctx.sizes is QUICK else HOT_SECONDS_FULL
    # The read side runs too: the bid history must hold every 201, and its processes
    # compete for the CPU as they would.
    async with stack(ctx, "auction_hot", "write-api", "read-api", "relay", "projector") as s:
        seller, *bidders = await register(s, HOT_BIDDERS + 1)
        (auction_id,) = await on_own_loop(lambda: open_auctions(s, [seller]))
        opens = time.perf_counter() + START_MARGIN_S + WARMUP_S
        closes = opens + seconds

        async def load() -> list[_Bids]:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(_bidder(s, auction_id, b, closes)) for b in bidders]
            return [t.result() for t in tasks]

        span, bids = await asyncio.gather(window(opens, closes, s.cpu_watch()),
                                          on_own_loop(load))  # fmt: skip
        verified = await _verify_hot(s, auction_id, bids, seller.auth)
    timed = [(end - start, ok) for b in bids for start, end, ok in b.times
             if span.start <= start < span.end]  # fmt: skip
    accepted = sum(ok for _, ok in timed)
    n = len(timed)
    return cpu_result(
        "auction_hot", n, span, "decisions/s", **percentiles_ms([t for t, _ in timed]),
        accepted_per_s=round(accepted / span.measured.seconds, 1),
        refused_per_s=round((n - accepted) / span.measured.seconds, 1),
        bidders=HOT_BIDDERS, bids=verified,
    )  # fmt: skip


# --- open loop: auction_bid_to_visible -------------------------------------------------


@dataclass(frozen=True)
class _Visible:
    """One bid's instants: scheduled, POST written, POST answered, GET answered; and
    whether it had to be made again, higher (its clock kept running)."""

    scheduled: float
    sent: float
    accepted: float
    seen: float
    retried: bool


class _Watcher:
    """Bids as the schedule says, then reads the auction back through the read API with
    X-Min-Position set to the bid's position."""

    def __init__(self, s: Stack, auctions: list[str], bidders: list[tuple[Member, Member]]) -> None:  # fmt: skip
        self.s = s
        self.auctions = auctions
        self.bidders = bidders
        self.writes = s.write_pool(VISIBLE_CONNECTIONS)
        self.reads = s.read_pool(VISIBLE_CONNECTIONS)

    async def one(self, i: int, scheduled: float) -> _Visible:
        """Bid i: on auction i mod A, its (i div A)-th bid, by its two bidders in turn."""
        a, step = i % len(self.auctions), i // len(self.auctions)
        auction_id, bidder = self.auctions[a], self.bidders[a][step % 2]
        amount = STARTING_PRICE + step * INCREMENT
        retried = False
        async with self.writes.connection() as conn:
            sent = time.perf_counter()
            while True:
                response = await conn.request(_bid_request(self.s, auction_id, bidder, amount))
                if response.status == 201:
                    break
                refused = REFUSED.decode(response.body) if response.status == 409 else None
                if refused is None or refused.minimum_bid is None:
                    raise HttpError(f"bid {amount} on auction {a}: {response.status} "
                                    f"{response.body[:300]!r}")  # fmt: skip
                # overtaken by its auction's next bid (only when a bid is held up for
                # longer than the 0.8 s between them): bid again, as a client would
                amount, retried = refused.minimum_bid, True
        accepted = time.perf_counter()
        placed = PLACED.decode(response.body)
        get = request_bytes(
            "GET", f"/v1/auctions/{auction_id}", self.s.read_host,
            {**bidder.auth, "X-Min-Position": placed.position, "X-Wait-Ms": str(VISIBLE_WAIT_MS)},
        )  # fmt: skip
        async with self.reads.connection() as conn:
            view = VIEW.decode(await expect(conn, get, 200, lambda: "read auction"))
        seen = time.perf_counter()
        checked(view.current_price is not None and view.current_price >= amount,
                lambda: f"auction {a} shows {view.current_price} at the position of bid {amount}")  # fmt: skip
        return _Visible(scheduled, sent, accepted, seen, retried)

    def close(self) -> None:
        self.writes.close()
        self.reads.close()


async def _paced(watcher: _Watcher, first: int, start: float, count: int) -> list[_Visible]:
    """Bid first + k at start + k / VISIBLE_RATE, open loop; all of them, once all are seen."""
    return await open_loop(lambda k, scheduled: watcher.one(first + k, scheduled), start, count,
                           VISIBLE_RATE, "bids")  # fmt: skip


async def auction_bid_to_visible(ctx: BenchContext) -> Result:
    """p50 ms from a bid's scheduled send until the read API shows it at its position."""
    seconds = VISIBLE_SECONDS_QUICK if ctx.sizes is QUICK else VISIBLE_SECONDS_FULL
    parts = ("write-api", "read-api", "relay", "projector")
    async with stack(ctx, "auction_visible", *parts) as s:
        members = await register(s, VISIBLE_SELLERS + 2 * VISIBLE_AUCTIONS)
        sellers, people = members[:VISIBLE_SELLERS], members[VISIBLE_SELLERS:]
        listed_by = [sellers[i % VISIBLE_SELLERS] for i in range(VISIBLE_AUCTIONS)]
        auctions = await on_own_loop(lambda: open_auctions(s, listed_by))
        bidders = [(people[2 * i], people[2 * i + 1]) for i in range(VISIBLE_AUCTIONS)]

        async def warm() -> None:
            # ten at a time on ten different auctions: every bid is decided in its order
            watcher = _Watcher(s, auctions, bidders)
            try:
                for first in range(0, VISIBLE_WARMUP, 10):
                    now = time.perf_counter()
                    await asyncio.gather(*(watcher.one(i, now) for i in range(first, first + 10)))
            finally:
                watcher.close()

        await on_own_loop(warm)
        start = time.perf_counter() + START_MARGIN_S
        opens = start + WARMUP_S
        closes = opens + seconds

        async def load() -> list[_Visible]:
            watcher = _Watcher(s, auctions, bidders)
            try:
                count = int((closes - start) * VISIBLE_RATE)
                return await _paced(watcher, VISIBLE_WARMUP, start, count)
            finally:
                watcher.close()

        span, seen = await asyncio.gather(window(opens, closes, s.cpu_watch()), on_own_loop(load))
    timed = [v for v in seen if span.start <= v.scheduled < span.end]
    pct = percentiles_ms([v.seen - v.scheduled for v in timed])
    p99 = pct["p99_ms"]
    result = cpu_result(
        "auction_bid_to_visible", len(timed), span, "ms", **pct,
        **percentiles_ms([v.accepted - v.sent for v in timed], "post_"),
        **percentiles_ms([v.seen - v.accepted for v in timed], "get_"),
        send_lag_p99_ms=percentiles_ms([v.sent - v.scheduled for v in timed])["p99_ms"],
        offered_per_s=round(len(timed) / span.measured.seconds, 1),
        # Below the offered rate when the stack cannot keep up: latencies then grow with
        # the length of the run, and the figure says "overloaded" rather than how fast.
        served_per_s=round(sum(span.start <= v.seen < span.end for v in seen) / span.measured.seconds, 1),
        auctions=f"{VISIBLE_AUCTIONS}, 2 bidders each",
        rebid_after_409=sum(v.retried for v in timed),
        target=f"p99 <= {TARGET_VISIBLE_P99_MS:g} ms: {'pass' if p99 <= TARGET_VISIBLE_P99_MS else 'FAIL'}",
    )  # fmt: skip
    result.value = pct["p50_ms"]
    return result
