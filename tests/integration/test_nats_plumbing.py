"""The JetStream plumbing the relay and the projector stand on: batches published with
their acknowledgements awaited together, and a durable consumer fed by a standing pull
request."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import structlog
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from infra.nats import AckedPublisher, PullFeed, connect, ensure_stream
from infra.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def nc(settings: Settings) -> AsyncIterator[NATS]:
    """A connection to the run's NATS, closed after the test."""
    assert settings.nats_url
    client = await connect(settings.nats_url, name="test-plumbing")
    try:
        yield client
    finally:
        await client.close()


def _messages(settings: Settings, n: int) -> list[tuple[str, bytes, dict[str, str]]]:
    return [
        (settings.subject("plumbing", "Tested"), str(i).encode(),
         {"Nats-Msg-Id": str(uuid.uuid4())})
        for i in range(n)
    ]  # fmt: skip


async def test_a_batch_is_acknowledged_in_order_and_repeats_are_dropped(
    settings: Settings, nc: NATS
) -> None:
    await ensure_stream(nc.jetstream(), settings)
    publisher = AckedPublisher(nc)
    batch = _messages(settings, 5)
    acks = await publisher.publish(batch, 5.0)
    assert [a.stream for a in acks] == [settings.nats_stream] * 5
    assert [a.seq for a in acks] == list(range(acks[0].seq, acks[0].seq + 5))
    again = await publisher.publish(batch, 5.0)  # a relay that restarted republishes
    assert all(a.duplicate for a in again) and [a.seq for a in again] == [a.seq for a in acks]
    assert await publisher.publish([], 5.0) == []


async def test_a_subject_no_stream_listens_on_is_refused(settings: Settings, nc: NATS) -> None:
    with pytest.raises(NatsError):
        await AckedPublisher(nc).publish(
            [(f"nowhere-{uuid.uuid4().hex}", b"x", {"Nats-Msg-Id": "1"})], 5.0
        )


async def test_the_feed_keeps_pulling_past_its_batch_promptly(settings: Settings, nc: NATS) -> None:
    js = nc.jetstream()
    await ensure_stream(js, settings)
    await js.add_consumer(
        settings.nats_stream,
        config=ConsumerConfig(
            name="feed", durable_name="feed", filter_subject=settings.subject_filter,
            ack_policy=AckPolicy.ALL, deliver_policy=DeliverPolicy.NEW,
        ),
    )  # fmt: skip
    feed = PullFeed(nc, settings.nats_stream, "feed", batch=4)
    await feed.start()
    try:
        assert await feed.next_batch(0.05) == []  # nothing yet: the request waits
        publisher = AckedPublisher(nc)
        received: list[bytes] = []
        started = time.monotonic()
        for round_ in range(5):  # 5 x 3 messages through requests of 4
            await publisher.publish(_messages(settings, 3), 5.0)
            while len(received) < 3 * (round_ + 1):
                msgs = await feed.next_batch(2.0)
                assert msgs, "the feed stalled"
                received += [m.data for m in msgs]
                await msgs[-1].ack()
        assert received == [str(i % 3).encode() for i in range(15)]
        assert time.monotonic() - started < 2.0  # never waited for a request to expire
    finally:
        await feed.stop()


async def test_the_feed_reports_a_deleted_consumer(settings: Settings, nc: NATS) -> None:
    js = nc.jetstream()
    await ensure_stream(js, settings)
    await js.add_consumer(
        settings.nats_stream,
        config=ConsumerConfig(name="gone", durable_name="gone",
                              filter_subject=settings.subject_filter),
    )  # fmt: skip
    feed = PullFeed(nc, settings.nats_stream, "gone", batch=4)
    await feed.start()
    try:
        assert await feed.next_batch(0.05) == []
        await js.delete_consumer(settings.nats_stream, "gone")
        with pytest.raises(NatsError):
            for _ in range(20):
                await feed.next_batch(0.1)
                await asyncio.sleep(0)
    finally:
        await feed.stop()


async def test_closing_a_connection_is_not_reported_as_a_disconnect(settings: Settings) -> None:
    """A clean shutdown closes NATS: nats-py calls the disconnect callback for that too, and
    it must not read as an outage in the logs."""
    assert settings.nats_url
    client = await connect(settings.nats_url, name="test-close")
    with structlog.testing.capture_logs() as logs:
        await client.close()
    assert [e["event"] for e in logs] == ["nats connection closed"]
    assert all(e["log_level"] != "warning" for e in logs)
