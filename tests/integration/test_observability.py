"""Observability: the metrics every process exposes after some work (the write and read
APIs over HTTP; the relay's, projector's and store's in-process, as their own servers
would show them), and a request's W3C traceparent carried into the event's metadata, the
relay's NATS headers and the projector's logs."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import msgspec
import pytest
import structlog
from prometheus_client import REGISTRY, generate_latest
from psycopg_pool import AsyncConnectionPool
from structlog.testing import capture_logs

from events.user import user_stream
from infra.metrics import serve_metrics
from infra.nats import connect
from infra.store import EventStore
from tests.fix_stack import Stack, free_port, relay_caught_up

pytestmark = pytest.mark.asyncio(loop_scope="session")

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def series(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition `text`; fails when it is not there."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in the metrics")


async def register(stack: Stack, username: str, **headers: str) -> httpx.Response:
    return await stack.write.post(
        "/v1/auth/register",
        json={"username": username, "password": "correct horse"},
        headers=headers,
    )


async def test_the_apis_expose_command_store_and_argon2_metrics(stack: Stack) -> None:
    name = f"m{uuid.uuid4().hex[:12]}"
    assert (await register(stack, name)).status_code == 201
    assert (await register(stack, name)).status_code == 409  # username_taken
    bad = await stack.write.post("/v1/channels", json={"name": "x"})
    assert bad.status_code == 401
    text = (await stack.write.get("/metrics")).text
    register_route = "POST /v1/auth/register"
    assert series(text, "hubbub_command_seconds_count", command=register_route, outcome="ok") >= 1
    assert series(text, "hubbub_command_seconds_count", command=register_route,
                  outcome="username_taken") >= 1  # fmt: skip
    assert series(text, "hubbub_command_seconds_count", command="POST /v1/channels",
                  outcome="unauthorized") >= 1  # fmt: skip
    assert series(text, "hubbub_command_seconds_bucket", command=register_route, outcome="ok",
                  le="+Inf") >= 1  # fmt: skip
    assert series(text, "hubbub_store_appends_total", outcome="ok") >= 1
    assert series(text, "hubbub_store_appends_total", outcome="conflict") >= 0
    assert series(text, "hubbub_store_appended_events_total") >= 2
    assert series(text, "hubbub_store_append_seconds_count") >= 1
    assert series(text, "hubbub_argon2_waiting") >= 0
    assert series(text, "hubbub_argon2_active") >= 0
    assert series(text, "hubbub_argon2_wait_seconds_count") >= 1
    assert series(text, "hubbub_argon2_seconds_count") >= 1
    assert series(text, "hubbub_http_request_seconds_count", service="write-api",
                  method="POST", route="/v1/auth/register", status="201") >= 1  # fmt: skip

    assert (await stack.read.get("/health/live")).status_code == 200
    read = (await stack.read.get("/metrics")).text
    assert series(read, "hubbub_http_request_seconds_count", service="read-api",
                  route="/health/live") >= 1  # fmt: skip
    # Reads are not commands, whatever the method.
    assert 'command="GET' not in read


async def test_the_relay_and_projector_expose_lag_and_rates(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    r = await register(stack, f"m{uuid.uuid4().hex[:12]}")
    assert r.status_code == 201
    await relay_caught_up(pool)
    me = await stack.read.get(
        f"/v1/users/{r.json()['user_id']}", headers={"X-Min-Position": r.json()["position"]}
    )
    assert me.status_code == 200, me.text
    await stack.runner.measure_lag()
    text = generate_latest(REGISTRY).decode()
    assert series(text, "hubbub_relay_published_total") >= 2
    assert series(text, "hubbub_relay_position") > 0
    assert series(text, "hubbub_relay_lag_seconds") >= 0
    for name in ("users", "channels", "auctions"):
        assert series(text, "hubbub_projection_applied_total", projection=name) >= 1
        assert series(text, "hubbub_projection_position", projection=name) > 0
        assert series(text, "hubbub_projection_lag_seconds", projection=name) >= 0
        assert series(text, "hubbub_projection_lag_events", projection=name) >= 0
    assert series(text, "hubbub_store_head_position") > 0
    assert series(text, "hubbub_projection_apply_seconds_count", mode="together") >= 0


async def test_traceparent_travels_from_the_request_to_nats_and_the_projector_logs(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        r = await register(stack, f"t{uuid.uuid4().hex[:12]}", traceparent=traceparent)
        assert r.status_code == 201, r.text
        user_id = r.json()["user_id"]
        seen = await stack.read.get(
            f"/v1/users/{user_id}", headers={"X-Min-Position": r.json()["position"]}
        )
        assert seen.status_code == 200, seen.text
        for _ in range(100):  # every projection, not just the one read
            applied = [
                e for e in logs
                if e["event"] == "event applied" and e.get("traceparent") == traceparent
                and e["type"] == "UserRegistered"
            ]  # fmt: skip
            if applied:
                break
            await asyncio.sleep(0.02)
    assert applied, [e for e in logs if e["event"] == "event applied"]
    assert applied[0]["log_level"] == "info"  # the trace is sampled (flags 01)
    (registered,) = await EventStore(pool).read_stream(user_stream(user_id))
    stored = msgspec.json.decode(registered.metadata)
    assert stored["traceparent"] == traceparent
    assert applied[0]["correlation_id"] == stored["correlation_id"]

    await relay_caught_up(pool)
    settings = stack.settings
    assert settings.nats_url
    nc = await connect(settings.nats_url, name="test-traceparent")
    try:
        msg = await nc.jetstream().get_last_msg(
            settings.nats_stream, settings.subject("user", "UserRegistered")
        )
    finally:
        await nc.close()
    assert msg.headers is not None
    assert msg.headers["Nats-Msg-Id"] == str(registered.event_id)
    assert msg.headers["traceparent"] == traceparent


async def test_an_untraced_or_malformed_traceparent_is_left_out(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    r = await register(stack, f"t{uuid.uuid4().hex[:12]}", traceparent="00-not-a-trace-01")
    assert r.status_code == 201, r.text
    (registered,) = await EventStore(pool).read_stream(user_stream(r.json()["user_id"]))
    assert msgspec.json.decode(registered.metadata).get("traceparent") is None


async def test_a_process_without_http_serves_metrics_on_its_port(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = free_port()
    monkeypatch.setenv("HUBBUB_METRICS_PORT", str(base))
    assert serve_metrics(stack.settings, "relay") == base
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://{stack.settings.host}:{base}/metrics")
    assert r.status_code == 200
    assert "hubbub_relay_published_total" in r.text
    assert "hubbub_projection_lag_seconds" in r.text
    # The port is taken now: a second process on it serves none, and runs all the same.
    assert serve_metrics(stack.settings, "relay") is None


async def test_the_relay_recreates_a_lost_jetstream_stream(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    """NATS back without its data (a new server, a lost volume): the relay creates the
    stream again and publishes on; the read models never depended on it."""
    settings = stack.settings
    assert settings.nats_url
    await relay_caught_up(pool)
    nc = await connect(settings.nats_url, name="test-lost-stream")
    try:
        js = nc.jetstream()
        await js.delete_stream(settings.nats_stream)
        r = await register(stack, f"l{uuid.uuid4().hex[:12]}")
        assert r.status_code == 201, r.text
        await relay_caught_up(pool, seconds=15)
        msg = await js.get_last_msg(
            settings.nats_stream, settings.subject("user", "UserRegistered")
        )
    finally:
        await nc.close()
    assert msg.headers is not None
    assert msg.headers["Hubbub-Position"] == r.json()["position"]
    seen = await stack.read.get(
        f"/v1/users/{r.json()['user_id']}", headers={"X-Min-Position": r.json()["position"]}
    )
    assert seen.status_code == 200, seen.text
