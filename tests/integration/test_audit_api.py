"""The auditor's and operator's read API over a known history: the export (order, filters,
resuming, NDJSON and CloudEvents), stream verification (whole and tampered), state as of a
position or a time for a user, a channel and an auction, and projection status."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from psycopg_pool import AsyncConnectionPool

from events.auction import auction_stream
from events.channel import channel_stream
from events.envelope import ENCODER, ENVELOPE_DECODER, Envelope, chain_hash, content_digest, micros
from events.user import RoleGranted, user_stream
from infra.db import make_pool
from infra.export import ExportQuery
from infra.export import export as export_log
from infra.store import EventStore, StreamAppend
from projections.registry import ALL
from tests.fix_chat import User, create_channel, join, say, users
from tests.fix_events import new_event
from tests.fix_stack import Stack
from tests.fix_tamper import force
from tests.integration.test_auctions import list_auction
from tests.integration.test_register_slice import assert_problem

pytestmark = pytest.mark.asyncio(loop_scope="session")

EVENTS = "/v1/audit/events"


@dataclass(frozen=True)
class History:
    auditor: User
    operator: User
    bob: User  # a plain user, granted a role after registering
    channel: str  # stream ids
    auction: str
    positions: dict[str, str]  # what each step answered

    def stream(self, name: str) -> str:
        return f"/v1/audit/streams/{name}"


async def known_history(stack: Stack, pool: AsyncConnectionPool) -> History:
    """Four users; a channel with a member and three messages; an auction with two bids;
    bob granted a role."""
    store = EventStore(pool)
    (auditor,) = await users(stack, store, 1, roles=frozenset({"auditor"}))
    (operator,) = await users(stack, store, 1, roles=frozenset({"operator"}))
    ann, bob = await users(stack, store, 2)
    positions: dict[str, str] = {}
    cid = await create_channel(stack.write, ann)
    await join(stack.write, cid, bob)
    for n, author in enumerate((ann, bob, ann), start=1):
        positions[f"message {n}"] = (await say(stack.write, cid, author, f"message {n}"))[
            "position"
        ]
    aid = await list_auction(stack, ann)
    for amount, bidder in ((1000, bob), (1100, auditor)):
        r = await stack.write.post(f"/v1/auctions/{aid}/bids", json={"amount": amount},
                                   headers=bidder.headers)  # fmt: skip
        assert r.status_code == 201, r.text
        positions[f"bid {amount}"] = r.json()["position"]
    granted = RoleGranted(user_id=bob.id, role="operator", granted_by="cli",
                          granted_at=datetime.now(UTC))  # fmt: skip
    result = await store.append([StreamAppend(user_stream(bob.id), 1, [new_event(granted)])])
    positions["role granted"] = result.position.token()
    for _ in range(500):  # until a commit-safe reader sees it all
        if await store.head() >= result.position:
            break
        await asyncio.sleep(0.01)
    return History(auditor, operator, bob, channel_stream(cid), auction_stream(aid), positions)


async def export(stack: Stack, who: User, **params: Any) -> list[Envelope]:
    r = await stack.read.get(EVENTS, params=params, headers=who.headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return [ENVELOPE_DECODER.decode(line) for line in r.content.splitlines()]


class _Line(msgspec.Struct):
    """A CloudEvents line with its data kept as the exact bytes sent."""

    id: str
    type: str
    time: datetime
    data: msgspec.Raw
    streamid: str
    streamversion: int
    schemaversion: int
    metadata: str
    prevhash: str
    hash: str


async def test_export_streams_the_log_in_commit_safe_order_filtered_as_asked(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    h = await known_history(stack, pool)
    stored = await EventStore(pool).read_all(limit=10_000)
    # byte for byte what RecordedEvent.envelope() gives (the export formats its own rows)
    whole = await stack.read.get(EVENTS, headers=h.auditor.headers)
    assert whole.content == b"".join(ENCODER.encode(e.envelope()) + b"\n" for e in stored)
    everything = await export(stack, h.auditor)
    assert len(everything) >= 19  # 4 users (8), channel (7), auction (3), a role (1)

    # after: everything that follows, and nothing after the last
    later = await export(stack, h.auditor, after=everything[9].position)
    assert later == everything[10:]
    assert await export(stack, h.auditor, after=everything[-1].position) == []
    assert await export(stack, h.auditor, limit=4) == everything[:4]
    assert await export(stack, h.auditor, after=everything[2].position, limit=3) == everything[3:6]

    # one stream, from its start or resumed after one of its own events
    channel = [e for e in everything if e.stream_id == h.channel]
    assert [e.stream_version for e in channel] == list(range(1, len(channel) + 1))
    assert await export(stack, h.auditor, stream_id=h.channel) == channel
    assert (
        await export(stack, h.auditor, stream_id=h.channel, after=channel[1].position)
        == channel[2:]
    )
    assert await export(stack, h.auditor, stream_id=f"channel-{uuid.uuid4()}") == []

    # types: repeated or comma-separated
    wanted = {"MessageSent", "BidPlaced"}
    typed = [e for e in everything if e.type in wanted]
    assert len(typed) == 5
    assert await export(stack, h.auditor, type=["MessageSent", "BidPlaced"]) == typed
    assert await export(stack, h.auditor, type="MessageSent,BidPlaced") == typed
    bids = [e for e in typed if e.type == "BidPlaced"]
    assert await export(stack, h.auditor, stream_id=h.auction, type="BidPlaced") == bids

    # since is inclusive, until exclusive, on recorded_at
    since, until = everything[5].recorded_at, everything[-3].recorded_at
    window = [e for e in everything if since <= e.recorded_at < until]
    got = await export(stack, h.auditor, since=since.isoformat(), until=until.isoformat())
    assert got == window and got
    assert await export(stack, h.auditor, since=(until + timedelta(days=1)).isoformat()) == []


async def test_cloudevents_lines_map_the_envelope_one_to_one(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    h = await known_history(stack, pool)
    envelopes = await export(stack, h.auditor, stream_id=h.auction)
    r = await stack.read.get(EVENTS, params={"stream_id": h.auction, "format": "cloudevents"},
                             headers=h.auditor.headers)  # fmt: skip
    assert r.status_code == 200, r.text
    lines = r.content.splitlines()
    assert len(lines) == len(envelopes) == 3
    for line, envelope in zip(lines, envelopes, strict=True):
        event = msgspec.json.decode(line)
        assert event["specversion"] == "1.0"
        assert event["datacontenttype"] == "application/json"
        assert event["source"] == f"hubbub/{h.auction}"
        assert (event["id"], event["type"], event["streamid"], event["streamversion"]) == (
            envelope.event_id, envelope.type, envelope.stream_id, envelope.stream_version,
        )  # fmt: skip
        assert (event["position"], event["prevhash"], event["hash"]) == (
            envelope.position, envelope.prev_hash, envelope.hash,
        )  # fmt: skip
        assert datetime.fromisoformat(event["time"]) == envelope.recorded_at
        assert event["data"] == msgspec.json.decode(envelope.data)
        assert msgspec.json.decode(event["metadata"]) == msgspec.json.decode(envelope.metadata)
        # One to one: the event's hash can be recomputed from the CloudEvent alone.
        ce = msgspec.json.decode(line, type=_Line)
        digest = content_digest(uuid.UUID(ce.id), ce.streamid, ce.type, ce.schemaversion,
                                bytes(ce.data), ce.metadata.encode())  # fmt: skip
        assert chain_hash(bytes.fromhex(ce.prevhash), ce.streamversion, micros(ce.time),
                          digest).hex() == ce.hash  # fmt: skip


async def test_export_refuses_strangers_and_bad_parameters_before_streaming(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    (auditor,) = await users(stack, EventStore(pool), 1, roles=frozenset({"auditor"}))
    (plain,) = await users(stack, EventStore(pool), 1, roles=frozenset({"operator"}))
    assert_problem(await stack.read.get(EVENTS), 401, "unauthorized")
    assert_problem(await stack.read.get(EVENTS, headers=plain.headers), 403, "forbidden")
    for params, field in (
        ({"after": "nope"}, "after"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-01-01T00:00:00"}, "until"),  # no offset
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"limit": "0"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"type": "Message Sent"}, "type"),
        ({"format": "xml"}, "format"),
        ({"stream_id": "x" * 301}, "stream_id"),
    ):
        r = await stack.read.get(EVENTS, params=params, headers=auditor.headers)
        body = assert_problem(r, 400, "validation_failed")
        assert [e["field"] for e in body["errors"]] == [field], body  # type: ignore[union-attr]
    r = await stack.read.get(EVENTS, params={"stream": "user-1"}, headers=auditor.headers)
    assert_problem(r, 400, "unknown_parameter")
    paths = [
        f"/v1/audit/streams/user-{auditor.id}/verify",
        f"/v1/audit/streams/user-{auditor.id}/state",
    ]
    for path in paths:
        assert_problem(await stack.read.get(path), 401, "unauthorized")
        assert_problem(await stack.read.get(path, headers=plain.headers), 403, "forbidden")


async def test_verify_names_the_first_bad_version_of_a_tampered_stream(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    h = await known_history(stack, pool)
    stored = await EventStore(pool).read_stream(h.channel)
    r = await stack.read.get(f"{h.stream(h.channel)}/verify", headers=h.auditor.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"stream_id": h.channel, "ok": True, "events": len(stored),
                        "head_hash": stored[-1].hash.hex(), "first_bad_version": None,
                        "reason": None}  # fmt: skip
    missing = await stack.read.get(h.stream(f"channel-{uuid.uuid4()}") + "/verify",
                                   headers=h.auditor.headers)  # fmt: skip
    assert_problem(missing, 404, "stream_not_found")

    await force(pool, "UPDATE events SET data = '{\"x\": 1}' WHERE stream_id = %s"
                " AND stream_version = 3", h.channel)  # fmt: skip
    r = await stack.read.get(f"{h.stream(h.channel)}/verify", headers=h.auditor.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["ok"], body["first_bad_version"], body["events"], body["head_hash"]) == (
        False, 3, 3, None,
    )  # fmt: skip
    assert body["reason"] == "hash mismatch"


async def _state(stack: Stack, h: History, stream: str, **params: str) -> dict[str, Any]:
    r = await stack.read.get(f"{h.stream(stream)}/state", params=params, headers=h.auditor.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["stream_id"] == stream
    return body


async def test_state_as_of_a_position_or_a_time(stack: Stack, pool: AsyncConnectionPool) -> None:
    h = await known_history(stack, pool)
    store = EventStore(pool)
    p = h.positions

    # a user: registered, then granted a role; the password hash never shows
    bob = user_stream(h.bob.id)
    registered, granted = await store.read_stream(bob)
    now = await _state(stack, h, bob)
    assert (now["version"], now["position"]) == (2, p["role granted"])
    assert now["state"]["type"] == "Registered" and now["state"]["roles"] == ["operator"]
    assert now["state"]["password_hash"] == "[redacted]"
    before = await _state(stack, h, bob, at_position=registered.at.token())
    assert (before["version"], before["state"]["roles"]) == (1, [])
    at_time = await _state(stack, h, bob, at_time=registered.recorded_at.isoformat())
    assert at_time == before
    assert datetime.fromisoformat(at_time["recorded_at"]) == registered.recorded_at
    unborn = await _state(
        stack, h, bob, at_time=(registered.recorded_at - timedelta(seconds=1)).isoformat()
    )
    assert unborn == {"stream_id": bob, "version": 0, "position": None, "recorded_at": None,
                      "state": {"type": "NoUser"}}  # fmt: skip
    assert granted.at.token() == p["role granted"]

    # a channel: created, joined, three messages; as of the second message
    second = await _state(stack, h, h.channel, at_position=p["message 2"])
    assert second["position"] == p["message 2"]
    assert second["state"]["type"] == "Live" and second["state"]["seq"] == 2
    assert len(second["state"]["members"]) == 2 and len(second["state"]["messages"]) == 2
    assert second["state"]["password_hash"] is None
    assert (await _state(stack, h, h.channel))["state"]["seq"] == 3
    # a position between two of the stream's events stops at the earlier one
    between = await _state(stack, h, h.channel, at_position=p["bid 1000"])
    assert between["version"] == (await store.version_of(h.channel))

    # an auction: as of the first bid, then now
    first = await _state(stack, h, h.auction, at_position=p["bid 1000"])
    assert first["state"]["type"] == "Open"
    assert (first["state"]["current_price"], first["state"]["leader_id"]) == (1000, h.bob.id)
    last = await _state(stack, h, h.auction)
    assert (last["state"]["current_price"], last["state"]["bid_count"]) == (1100, 2)
    bid_time = (await store.read_stream(h.auction))[1].recorded_at
    assert (await _state(stack, h, h.auction, at_time=bid_time.isoformat()))["state"] == first[
        "state"
    ]

    get = stack.read.get
    auth = h.auditor.headers
    assert_problem(await get(h.stream(f"user-{uuid.uuid4()}") + "/state", headers=auth),
                   404, "stream_not_found")  # fmt: skip
    username = (await store.read_all(limit=1))[0].stream_id
    assert username.startswith("username-")
    assert_problem(await get(h.stream(username) + "/state", headers=auth), 422, "no_state_model")
    both = {"at_position": p["bid 1000"], "at_time": bid_time.isoformat()}
    body = assert_problem(await get(h.stream(bob) + "/state", params=both, headers=auth),
                          400, "validation_failed")  # fmt: skip
    assert [e["field"] for e in body["errors"]] == ["at_time"]  # type: ignore[union-attr]
    for bad in ({"at_position": "x"}, {"at_time": "noon"}):
        assert_problem(await get(h.stream(bob) + "/state", params=bad, headers=auth),
                       400, "validation_failed")  # fmt: skip


async def test_projection_status_is_for_operators(stack: Stack, pool: AsyncConnectionPool) -> None:
    store = EventStore(pool)
    (operator,) = await users(stack, store, 1, roles=frozenset({"operator"}))
    (auditor,) = await users(stack, store, 1, roles=frozenset({"auditor"}))
    path = "/v1/ops/projections"
    assert_problem(await stack.read.get(path), 401, "unauthorized")
    assert_problem(await stack.read.get(path, headers=auditor.headers), 403, "forbidden")
    r = await stack.read.get(path, headers=operator.headers)
    assert r.status_code == 200, r.text
    rows = r.json()
    assert [row["name"] for row in rows] == [p.name for p in ALL]
    head = (await store.head()).token()
    for row in rows:
        assert row.keys() == {"name", "position", "head_position", "lag_events", "lag_seconds",
                              "status"}  # fmt: skip
        assert row["head_position"] <= head and row["lag_events"] >= 0
        assert row["status"] in {"live", "catching_up", "rebuilding", "stale", "missing"}


async def test_an_export_left_early_gives_its_connection_back(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    await users(stack, EventStore(pool), 5)
    assert stack.settings.database_url
    async with make_pool(stack.settings.database_url, min_size=1, max_size=1) as one:
        chunks = await export_log(EventStore(one, notify=False), ExportQuery(), batch=2)
        first = await anext(chunks)  # the next batch is being read meanwhile
        assert first.count(b"\n") == 2
        await chunks.aclose()
        async with one.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
