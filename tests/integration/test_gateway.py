"""The WebSocket gateway (CONTRACT.md, WebSocket gateway), with real `websockets` clients
against a real gateway on the stack's PostgreSQL and NATS."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from dataclasses import replace

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from infra.store import EventStore
from infra.tokens import Tokens
from read_api.gateway.server import Gateway
from tests.fix_chat import create_channel, join, say, users
from tests.fix_gateway import (
    caught_up,
    close_code,
    gateway_for,
    message_with,
    quiet,
    recv,
    signed_in,
    subscribe,
    token_of,
    until,
)
from tests.fix_stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


# -- signing in ---------------------------------------------------------------------------


async def test_no_auth_frame_within_5_s_closes_4408(gateway: Gateway) -> None:
    async with connect(gateway.url, compression=None) as ws:
        started = asyncio.get_running_loop().time()
        assert await close_code(ws, seconds=10) == 4408
        assert 4.5 <= asyncio.get_running_loop().time() - started < 7


async def test_bad_tokens_close_4401(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    [ann] = await users(stack, EventStore(pool), 1)
    forged, _ = Tokens("another secret that is long enough!!").issue(
        ann.id, str(uuid.uuid4()), frozenset()
    )
    expired, _ = Tokens(stack.settings.resolved_jwt_secret()).issue(
        ann.id, str(uuid.uuid4()), frozenset(), now=1_000_000
    )
    first_frames = [
        {"op": "auth", "token": "not.a.token"},
        {"op": "auth", "token": forged},
        {"op": "auth", "token": expired},
        {"op": "auth"},
        {"op": "subscribe", "topic": "me"},  # anything before auth
    ]
    for first in first_frames:
        async with connect(gateway.url, compression=None) as ws:
            await ws.send(json.dumps(first))
            assert await close_code(ws) == 4401, first
    async with connect(gateway.url, compression=None) as ws:
        await ws.send("garbage")
        assert await close_code(ws) == 4401


async def test_token_expiry_closes_4401_unless_renewed(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    [ann] = await users(stack, EventStore(pool), 1)
    short = Tokens(stack.settings.resolved_jwt_secret(), ttl_s=2)
    session = str(uuid.uuid4())
    lapsing = await signed_in(gateway.url, short.issue(ann.id, session, frozenset())[0])
    renewed = await signed_in(gateway.url, short.issue(ann.id, session, frozenset())[0])
    await asyncio.sleep(1)
    longer = Tokens(stack.settings.resolved_jwt_secret(), ttl_s=4)
    await renewed.send(
        json.dumps({"op": "auth", "token": longer.issue(ann.id, session, frozenset())[0]})
    )
    assert (await recv(renewed))["type"] == "authenticated"
    assert await close_code(lapsing, seconds=5) == 4401
    await renewed.send(json.dumps({"op": "ping"}))  # past the first token's end, still open
    assert (await recv(renewed))["type"] == "pong"
    assert await close_code(renewed, seconds=6) == 4401


async def test_renewing_as_someone_else_closes_4401(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    ann, bob = await users(stack, EventStore(pool), 2)
    ws = await signed_in(gateway.url, token_of(ann))
    await ws.send(json.dumps({"op": "auth", "token": token_of(bob)}))
    assert await close_code(ws) == 4401


async def test_a_revoked_session_is_closed_4401(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    r = await stack.write.post("/v1/auth/register", json={"username": f"u{uuid.uuid4().hex[:10]}",
                                                          "password": "correct horse"})  # fmt: skip
    assert r.status_code == 201, r.text
    username = json.loads(r.request.content)["username"]
    r = await stack.write.post(
        "/v1/auth/login", json={"username": username, "password": "correct horse"}
    )
    tokens = r.json()
    ws = await signed_in(gateway.url, tokens["access_token"])
    r = await stack.write.post("/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]},
                               headers={"Authorization": f"Bearer {tokens['access_token']}"})  # fmt: skip
    assert r.status_code == 204, r.text
    assert await close_code(ws, seconds=5) == 4401


# -- what may be watched ------------------------------------------------------------------


async def test_forbidden_topics(stack: Stack, gateway: Gateway, pool: AsyncConnectionPool) -> None:
    ann, bob, eve = await users(stack, EventStore(pool), 3)
    private = await create_channel(stack.write, bob, "private")
    public = await create_channel(stack.write, bob, "public")
    r = await stack.write.post("/v1/dms", json={"user_id": ann.id}, headers=bob.headers)
    assert r.status_code == 200, r.text
    dm = r.json()["channel_id"]
    await caught_up(gateway, pool)
    ws = await signed_in(gateway.url, token_of(eve))
    for topic in (f"me:{ann.id}", f"channel:{private}", f"channel:{dm}", f"channel:{uuid.uuid4()}"):
        answer = await subscribe(ws, topic)
        assert answer == {"type": "error", "code": "forbidden", "message": answer["message"],
                          "topic": topic}, answer  # fmt: skip
    assert (await subscribe(ws, f"auction:{uuid.uuid4()}"))["code"] == "not_found"
    for bad in ("channel:nope", "lobby", "channel:"):
        assert (await subscribe(ws, bad))["code"] == "invalid_topic"
    # what eve may watch: her own notifications, a public channel (member or not)
    assert await subscribe(ws, "me") == {"type": "subscribed", "topic": f"me:{eve.id}", "seq": 0}
    assert await subscribe(ws, f"me:{eve.id}") == {"type": "subscribed", "topic": f"me:{eve.id}",
                                                   "seq": 0}  # fmt: skip
    assert (await subscribe(ws, f"channel:{public}"))["type"] == "subscribed"
    # the DM's own members may
    bobs = await signed_in(gateway.url, token_of(bob))
    assert (await subscribe(bobs, f"channel:{dm}"))["type"] == "subscribed"


# -- live frames --------------------------------------------------------------------------


async def test_frames_come_after_the_read_models_and_carry_seq(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    owner, ann = await users(stack, EventStore(pool), 2)
    r = await stack.write.post("/v1/channels", json={"name": f"c-{uuid.uuid4().hex[:12]}",
                                                     "visibility": "public"}, headers=owner.headers)  # fmt: skip
    cid, position = r.json()["channel_id"], r.json()["position"]
    ws = await signed_in(gateway.url, token_of(ann))
    # min_position: as X-Min-Position, waits for the read models to have the channel
    await ws.send(
        json.dumps({"op": "subscribe", "topic": f"channel:{cid}", "min_position": position})
    )
    subscribed = await recv(ws)
    assert subscribed == {"type": "subscribed", "topic": f"channel:{cid}", "seq": 1}  # owner joined
    await join(stack.write, cid, ann)
    sent = await say(stack.write, cid, owner, f"hello @{ann.username}")
    got = await until(ws, message_with(f"hello @{ann.username}"))
    assert [(f["seq"], f["name"]) for f in got] == [(2, "member.joined"), (3, "message.sent")]
    frame = got[-1]
    assert set(frame) == {"type", "topic", "seq", "position", "name", "data"}
    assert (
        frame["data"]["message_id"] == sent["message_id"] and frame["position"] == sent["position"]
    )
    # Whoever reads right after the frame (no X-Min-Position) sees what it announced.
    r = await stack.read.get(f"/v1/channels/{cid}/messages", headers=ann.headers)
    assert sent["message_id"] in [m["message_id"] for m in r.json()["items"]]
    r = await stack.read.get("/v1/me/notifications", headers=ann.headers)
    assert [n["kind"] for n in r.json()["items"]] == ["mentioned"]


async def test_me_and_auction_topics(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.integration.test_auctions import list_auction

    seller, ann, bob = await users(stack, EventStore(pool), 3)
    aid = await list_auction(
        stack, seller, ends_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()
    )
    await caught_up(gateway, pool)
    ws = await signed_in(gateway.url, token_of(ann))
    answer = await subscribe(ws, f"auction:{aid}")
    assert answer.get("seq") == 1, answer  # auction.opened
    assert (await subscribe(ws, "me"))["seq"] == 0
    r = await stack.write.post(
        f"/v1/auctions/{aid}/bids", json={"amount": 1000}, headers=ann.headers
    )
    assert r.status_code == 201, r.text
    r = await stack.write.post(
        f"/v1/auctions/{aid}/bids", json={"amount": 1100}, headers=bob.headers
    )
    assert r.status_code == 201, r.text
    got = await until(ws, lambda f: f.get("name") == "notification")
    bids = [
        (f["topic"], f["seq"], f["data"]["amount"]) for f in got if f.get("name") == "bid.placed"
    ]
    assert bids == [(f"auction:{aid}", 2, 1000), (f"auction:{aid}", 3, 1100)]
    assert got[-1]["topic"] == f"me:{ann.id}" and got[-1]["data"]["kind"] == "outbid"


# -- membership ---------------------------------------------------------------------------


async def test_a_member_who_leaves_stops_receiving_at_once(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    owner, ann = await users(stack, EventStore(pool), 2)
    cid = await create_channel(stack.write, owner, "private")
    r = await stack.write.post(f"/v1/channels/{cid}/invites", json={"user_id": ann.id},
                               headers=owner.headers)  # fmt: skip
    assert r.status_code == 201, r.text
    await join(stack.write, cid, ann)
    await caught_up(gateway, pool)
    watcher = await signed_in(gateway.url, token_of(owner))
    leaver = await signed_in(gateway.url, token_of(ann))
    for ws in (watcher, leaver):
        assert (await subscribe(ws, f"channel:{cid}"))["type"] == "subscribed"
    await say(stack.write, cid, owner, "before")
    await until(leaver, message_with("before"))
    r = await stack.write.post(f"/v1/channels/{cid}/leave", headers=ann.headers)
    assert r.status_code == 200, r.text
    await say(stack.write, cid, owner, "after")  # right behind the leave
    got = await until(leaver, lambda f: f["type"] == "error")
    assert [f.get("name") for f in got] == ["member.left", None]
    assert got[-1] == {"type": "error", "code": "forbidden", "message": got[-1]["message"],
                       "topic": f"channel:{cid}"}  # fmt: skip
    await until(watcher, message_with("after"))
    assert await quiet(leaver, 0.5) == []
    # and watching it again is refused
    assert (await subscribe(leaver, f"channel:{cid}"))["code"] == "forbidden"


async def test_leaving_and_rejoining_while_catching_up_keeps_the_stream_whole(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    owner, ann = await users(stack, EventStore(pool), 2)
    cid = await create_channel(stack.write, owner)  # public: leaving does not forbid reading
    await join(stack.write, cid, ann)
    await caught_up(gateway, pool)
    ws = await signed_in(gateway.url, token_of(ann))
    await subscribe(ws, f"channel:{cid}")
    await stack.write.post(f"/v1/channels/{cid}/leave", headers=ann.headers)
    await join(stack.write, cid, ann)
    await say(stack.write, cid, owner, "still here")
    got = await until(ws, message_with("still here"))
    assert [f["name"] for f in got] == ["member.left", "member.joined", "message.sent"]
    assert [f["seq"] for f in got] == [3, 4, 5]


async def test_a_deleted_channel_ends_every_subscription(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    owner, ann = await users(stack, EventStore(pool), 2)
    cid = await create_channel(stack.write, owner)
    await caught_up(gateway, pool)
    ws = await signed_in(gateway.url, token_of(ann))
    await subscribe(ws, f"channel:{cid}")
    r = await stack.write.delete(f"/v1/channels/{cid}", headers=owner.headers)
    assert r.status_code == 200, r.text
    got = await until(ws, lambda f: f["type"] == "error")
    assert [f.get("name") for f in got] == ["channel.deleted", None]
    assert got[-1]["code"] == "forbidden"


# -- resuming -----------------------------------------------------------------------------


async def test_resume_after_a_dropped_connection_has_no_gap_and_no_duplicate(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    owner, ann = await users(stack, EventStore(pool), 2)
    cid = await create_channel(stack.write, owner)
    topic = f"channel:{cid}"
    await caught_up(gateway, pool)
    ws = await signed_in(gateway.url, token_of(ann))
    await subscribe(ws, topic)
    for i in range(5):
        await say(stack.write, cid, owner, f"m{i}")
    seen = [f["seq"] for f in await until(ws, message_with("m4"))]
    await ws.close()  # dropped: messages keep coming while it is away and while it resumes

    async def talk() -> None:
        for i in range(5, 60):
            await say(stack.write, cid, owner, f"m{i}")

    talking = asyncio.create_task(talk())
    await asyncio.sleep(0.3)
    ws = await signed_in(gateway.url, token_of(ann))
    subscribed = await subscribe(ws, topic, after_seq=seen[-1])
    assert subscribed["type"] == "subscribed" and subscribed["seq"] > seen[-1]
    got = await until(ws, message_with("m59"), seconds=30)
    await talking
    seqs = seen + [f["seq"] for f in got]
    assert seqs == list(range(2, 62)), seqs  # after the owner's join: 60 messages, once each
    texts = [f["data"]["text"] for f in got]
    assert texts[0] == "m5" and texts[-1] == "m59"
    # from the start, on a second connection, with the same result
    again = await signed_in(gateway.url, token_of(ann))
    await subscribe(again, topic, after_seq=0)
    assert [f["seq"] for f in await until(again, message_with("m59"))] == list(range(1, 62))


async def test_resuming_ahead_of_the_gateway_waits_for_it(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    owner, ann = await users(stack, EventStore(pool), 2)
    cid = await create_channel(stack.write, owner)
    await caught_up(gateway, pool)
    ws = await signed_in(gateway.url, token_of(ann))
    # as if another gateway, further along, had sent seq 2 and 3 already
    assert (await subscribe(ws, f"channel:{cid}", after_seq=3))["seq"] == 1
    for i in range(4):
        await say(stack.write, cid, owner, f"m{i}")
    got = await until(ws, message_with("m3"))
    assert [f["seq"] for f in got] == [4, 5]


# -- backpressure -------------------------------------------------------------------------


async def test_a_slow_client_is_closed_4429_and_a_fast_one_keeps_up(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    owner, fast_user, slow_user = await users(stack, EventStore(pool), 3)
    cid = await create_channel(stack.write, owner)
    async with gateway_for(stack, queue_bytes=64 * 1024, send_buffer=16 * 1024) as gw:
        await caught_up(gw, pool)
        fast = await signed_in(gw.url, token_of(fast_user), max_queue=None)  # reads all it gets
        # A reader that stops: tiny socket buffers and a one-message queue in the client.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gw.port))
        slow = await signed_in(gw.url, token_of(slow_user), sock=sock, max_queue=1)
        for ws in (fast, slow):
            assert (await subscribe(ws, f"channel:{cid}"))["type"] == "subscribed"
        text = "x" * 3990
        reading = asyncio.create_task(
            until(fast, lambda f: f.get("data", {}).get("text", "").startswith("79 "), 30)
        )
        for i in range(80):  # ~330 KB of frames: more than the kernel and the queue hold
            await say(stack.write, cid, owner, f"{i} {text}")
        got = await reading
        assert [f["seq"] for f in got] == list(range(2, 82))
        assert await close_code(slow, seconds=15) == 4429
        # the gateway carries on for everyone else
        await say(stack.write, cid, owner, "after")
        await until(fast, message_with("after"))


async def test_a_peer_that_stops_answering_pings_is_dropped(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    ann, bob = await users(stack, EventStore(pool), 2)
    async with gateway_for(stack, ping_s=1.0) as gw:
        alive = await signed_in(gw.url, token_of(ann))  # the library answers pings
        # a bare socket: handshake and auth frame, then it never reads (nor answers) again
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")  # fmt: skip
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        auth = json.dumps({"op": "auth", "token": token_of(bob)}).encode()
        writer.write(bytes([0x81, 0x80 | 126]) + len(auth).to_bytes(2, "big") + b"\0" * 4 + auth)
        await writer.drain()
        await asyncio.sleep(4)
        assert [c.user_id for c in gw.parts.clients] == [ann.id]  # bob's socket was dropped
        await alive.send(json.dumps({"op": "ping"}))
        assert (await recv(alive))["type"] == "pong"
        writer.close()


# -- garbage ------------------------------------------------------------------------------


async def test_garbage_unknown_ops_and_huge_frames_never_crash_it(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    owner, ann = await users(stack, EventStore(pool), 2)
    cid = await create_channel(stack.write, owner)
    await caught_up(gateway, pool)
    ws = await signed_in(gateway.url, token_of(ann))
    cases: list[tuple[str | bytes, str]] = [
        ("not json", "malformed_json"),
        ("[1, 2]", "invalid_frame"),
        ('{"op": "dance"}', "unknown_op"),
        ('{"no": "op"}', "invalid_frame"),
        ('{"op": "subscribe"}', "invalid_frame"),
        ('{"op": "subscribe", "topic": "me", "after_seq": -1}', "invalid_frame"),
        ('{"op": "subscribe", "topic": 7}', "invalid_frame"),
        ('{"op": "typing", "channel_id": "x"}', "invalid_frame"),
        ('{"op": "ack", "channel_id": "x", "message_id": "y"}', "invalid_frame"),
        (b"\x00\xff\xfe binary", "malformed_json"),
        ("\u0000" * 100, "malformed_json"),
        ('{"op": "subscribe", "topic": ' + "[" * 5000 + "]" * 5000 + "}", "malformed_json"),
    ]
    for raw, code in cases:
        await ws.send(raw)
        answer = await recv(ws)
        assert answer["type"] == "error" and answer["code"] == code, (raw, answer)
    await ws.send(json.dumps({"op": "ping"}))
    assert await recv(ws) == {"type": "pong"}
    await ws.send("x" * (65 * 1024))  # larger than any op may be
    assert await close_code(ws) == 1009
    # nobody else noticed
    other = await signed_in(gateway.url, token_of(owner))
    assert (await subscribe(other, f"channel:{cid}"))["type"] == "subscribed"
    await say(stack.write, cid, owner, "fine")
    await until(other, message_with("fine"))


# -- presence, typing and acks ------------------------------------------------------------


async def test_presence_on_subscribe_then_changes(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    owner, ann, bob = await users(stack, EventStore(pool), 3)
    cid = await create_channel(stack.write, owner)
    await join(stack.write, cid, ann, bob)
    await caught_up(gateway, pool)
    anns = await signed_in(gateway.url, token_of(ann))
    await asyncio.sleep(0.3)  # ann's coming online has been gathered and told
    owners = await signed_in(gateway.url, token_of(owner))
    assert (await subscribe(owners, f"channel:{cid}"))["type"] == "subscribed"
    online = {"type": "presence", "channel_id": cid, "status": "online"}
    # who is there already, each once (the owner too, once the round has told it)
    got = await until(owners, lambda f: f.get("user_id") == ann.id, presence=True)
    assert got[-1] == {**online, "user_id": ann.id}
    bobs = await signed_in(gateway.url, token_of(bob))
    got = await until(owners, lambda f: f.get("user_id") == bob.id, presence=True)
    assert got[-1] == {**online, "user_id": bob.id}
    await bobs.close()
    got = await until(owners, lambda f: f.get("user_id") == bob.id, presence=True)
    assert got[-1] == {**online, "user_id": bob.id, "status": "offline"}
    await anns.close()


async def test_typing_reaches_other_subscribers_from_members_only(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    owner, ann, eve = await users(stack, EventStore(pool), 3)
    cid = await create_channel(stack.write, owner)
    await join(stack.write, cid, ann)
    await caught_up(gateway, pool)
    watchers = [await signed_in(gateway.url, token_of(u)) for u in (owner, ann, eve)]
    for ws in watchers:
        await subscribe(ws, f"channel:{cid}")
    await watchers[1].send(json.dumps({"op": "typing", "channel_id": cid}))
    frame = {"type": "typing", "channel_id": cid, "user_id": ann.id}
    for ws in (watchers[0], watchers[2]):
        assert (await until(ws, lambda f: f["type"] == "typing"))[-1] == frame
    assert [
        f for f in await quiet(watchers[1], 0.3) if f["type"] == "typing"
    ] == []  # not to the typist
    await watchers[2].send(json.dumps({"op": "typing", "channel_id": cid}))  # eve is no member
    assert (await until(watchers[2], lambda f: f["type"] == "error"))[-1]["code"] == "forbidden"


async def test_an_ack_records_delivery(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    ann, bob = await users(stack, EventStore(pool), 2)
    r = await stack.write.post("/v1/dms", json={"user_id": bob.id}, headers=ann.headers)
    dm = r.json()["channel_id"]
    await caught_up(gateway, pool)
    bobs = await signed_in(gateway.url, token_of(bob))
    anns = await signed_in(gateway.url, token_of(ann))
    for ws in (anns, bobs):
        await subscribe(ws, f"channel:{dm}")
    sent = await say(stack.write, dm, ann, "got it?")
    frame = (await until(bobs, message_with("got it?")))[-1]
    await bobs.send(
        json.dumps({"op": "ack", "channel_id": dm, "message_id": frame["data"]["message_id"]})
    )
    receipt = (await until(anns, lambda f: f.get("name") == "receipt.delivered"))[-1]
    assert (
        receipt["data"]["user_id"] == bob.id and receipt["data"]["message_id"] == sent["message_id"]
    )
    r = await stack.read.get(f"/v1/channels/{dm}/messages", headers=ann.headers)
    assert [m["status"] for m in r.json()["items"]] == ["delivered"]
    # acking what one may not is the write API's error, as an error frame
    await bobs.send(json.dumps({"op": "ack", "channel_id": str(uuid.uuid4()),
                                "message_id": sent["message_id"]}))  # fmt: skip
    refused = (await until(bobs, lambda f: f["type"] == "error"))[-1]
    assert refused["code"] == "channel_not_found", refused


# -- HTTP on the gateway's port -----------------------------------------------------------


async def test_health_metrics_and_the_origin_allowlist(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    [ann] = await users(stack, EventStore(pool), 1)
    settings = replace(stack.settings, gateway_origins=("https://app.example.com",))
    async with gateway_for(Stack(settings, stack.write, stack.read, stack.runner)) as gw:
        base = f"http://127.0.0.1:{gw.port}"
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/health/live")).json() == {"status": "ok"}
            ready = await http.get("/health/ready")
            assert ready.status_code == 200 and ready.json()["checks"] == {
                "postgres": "ok",
                "nats": "ok",
            }
            exposed = (await http.get("/metrics")).text
            for series in ("hubbub_gateway_connections", "hubbub_gateway_subscriptions",
                           'hubbub_gateway_frames_sent_total{type="event"}',
                           'hubbub_gateway_ops_received_total{op="invalid"}',
                           'hubbub_gateway_closes_total{code="4429"}'):  # fmt: skip
                assert series in exposed, series
            assert (await http.get("/elsewhere")).status_code == 404
        with pytest.raises(InvalidStatus) as refused:
            await connect(gw.url, origin="https://evil.example.com")  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        ws = await signed_in(gw.url, token_of(ann), origin="https://app.example.com")
        await ws.close()
        ws = await signed_in(gw.url, token_of(ann))  # native clients send no Origin
        await ws.close()
