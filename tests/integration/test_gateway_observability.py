"""The gateway's observability: its series count frames, ops, closes and subscriptions as
a real client causes them, and a request's W3C traceparent reaches the gateway's
`frame delivered` log line for the frame its event made."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg_pool import AsyncConnectionPool
from structlog.testing import capture_logs
from websockets.asyncio.client import connect

from infra.store import EventStore
from read_api.gateway.server import Gateway
from tests.fix_chat import create_channel, say, users
from tests.fix_gateway import (
    caught_up,
    close_code,
    message_with,
    recv,
    signed_in,
    subscribe,
    token_of,
    until,
)
from tests.fix_stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

Sample = tuple[str, frozenset[tuple[str, str]]]


async def scrape(gateway: Gateway) -> dict[Sample, float]:
    """Every sample the gateway's /metrics shows, by name and labels."""
    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://127.0.0.1:{gateway.port}/metrics")
    assert r.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def at(samples: dict[Sample, float], name: str, **labels: str) -> float:
    """One sample's value; fails when the series is missing."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no {name} {labels} in the metrics"
    return samples[key]


async def test_every_series_exists_from_the_start(gateway: Gateway) -> None:
    samples = await scrape(gateway)
    for kind in ("authenticated", "subscribed", "unsubscribed", "error", "pong", "typing",
                 "presence", "event"):  # fmt: skip
        at(samples, "hubbub_gateway_frames_sent_total", type=kind)
    for op in ("auth", "subscribe", "unsubscribe", "typing", "ping", "ack", "invalid"):
        at(samples, "hubbub_gateway_ops_received_total", op=op)
    for code in ("1000", "1001", "1006", "1009", "1011", "4401", "4408", "4429", "other"):
        at(samples, "hubbub_gateway_closes_total", code=code)
    for name in ("hubbub_gateway_subscriptions", "hubbub_gateway_connections",
                 "hubbub_gateway_deliveries_total", "hubbub_gateway_slow_closes_total"):  # fmt: skip
        at(samples, name)


async def test_frames_ops_closes_and_subscriptions_are_counted(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    [owner] = await users(stack, EventStore(pool), 1)
    cid = await create_channel(stack.write, owner)
    await caught_up(gateway, pool)
    before = await scrape(gateway)

    def grew(now: dict[Sample, float], name: str, **labels: str) -> float:
        return at(now, name, **labels) - at(before, name, **labels)

    ws = await signed_in(gateway.url, token_of(owner))
    assert (await subscribe(ws, f"channel:{cid}"))["type"] == "subscribed"
    await ws.send("not json")
    assert (await recv(ws))["code"] == "malformed_json"
    await ws.send(json.dumps({"op": "ping"}))
    assert (await recv(ws))["type"] == "pong"
    await say(stack.write, cid, owner, "counted")
    await until(ws, message_with("counted"))
    during = await scrape(gateway)
    assert grew(during, "hubbub_gateway_subscriptions") == 1
    assert grew(during, "hubbub_gateway_connections") == 1

    async with connect(gateway.url, compression=None) as stranger:
        await stranger.send(json.dumps({"op": "auth", "token": "not.a.token"}))
        assert await close_code(stranger) == 4401
    await ws.close()
    for _ in range(250):  # the server counts a close once its handler has finished
        after = await scrape(gateway)
        closes = [grew(after, "hubbub_gateway_closes_total", code=c) for c in ("1000", "4401")]
        if grew(after, "hubbub_gateway_connections") == 0 and all(closes):
            break
        await asyncio.sleep(0.02)

    frames, ops = "hubbub_gateway_frames_sent_total", "hubbub_gateway_ops_received_total"
    for kind in ("authenticated", "subscribed", "error", "pong", "event"):
        assert grew(after, frames, type=kind) == 1, kind
    assert grew(after, frames, type="presence") >= 1  # the owner, online in the channel
    assert grew(after, "hubbub_gateway_deliveries_total") == 1
    assert grew(after, ops, op="auth") == 2  # the stranger's too
    for op in ("subscribe", "ping", "invalid"):
        assert grew(after, ops, op=op) == 1, op
    assert grew(after, "hubbub_gateway_closes_total", code="1000") == 1
    assert grew(after, "hubbub_gateway_closes_total", code="4401") == 1
    assert grew(after, "hubbub_gateway_subscriptions") == 0
    assert grew(after, "hubbub_gateway_connections") == 0


async def test_traceparent_travels_from_the_request_to_the_gateway_logs(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    [owner] = await users(stack, EventStore(pool), 1)
    cid = await create_channel(stack.write, owner)
    await caught_up(gateway, pool)
    watchers = [await signed_in(gateway.url, token_of(owner)) for _ in range(2)]
    for ws in watchers:
        assert (await subscribe(ws, f"channel:{cid}"))["type"] == "subscribed"
    text = f"traced {uuid.uuid4().hex[:8]}"
    with capture_logs() as logs:
        r = await stack.write.post(
            f"/v1/channels/{cid}/messages", json={"text": text},
            headers={**owner.headers, "traceparent": TRACEPARENT},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        frames = [(await until(ws, message_with(text)))[-1] for ws in watchers]
    for ws in watchers:
        await ws.close()
    topic, seq = f"channel:{cid}", frames[0]["seq"]
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT event_id::text, traceparent FROM rm_feed.frames WHERE topic = %s AND seq = %s",
            (topic, seq),
        )
        row = await cur.fetchone()
    assert row is not None and row[1] == TRACEPARENT
    delivered = [e for e in logs if e["event"] == "frame delivered" and e.get("topic") == topic]
    assert delivered == [
        {
            "event": "frame delivered", "log_level": "debug", "topic": topic, "seq": seq,
            "event_id": row[0], "traceparent": TRACEPARENT, "connections": 2,
        }
    ], delivered  # fmt: skip


async def test_a_frame_without_a_trace_logs_none(
    stack: Stack, gateway: Gateway, pool: AsyncConnectionPool
) -> None:
    [owner] = await users(stack, EventStore(pool), 1)
    cid = await create_channel(stack.write, owner)
    await caught_up(gateway, pool)
    ws = await signed_in(gateway.url, token_of(owner))
    assert (await subscribe(ws, f"channel:{cid}"))["type"] == "subscribed"
    with capture_logs() as logs:
        await say(stack.write, cid, owner, "untraced")
        await until(ws, message_with("untraced"))
    await ws.close()
    delivered = [e for e in logs if e["event"] == "frame delivered"]
    assert [(e["topic"], e["traceparent"]) for e in delivered] == [(f"channel:{cid}", None)]
