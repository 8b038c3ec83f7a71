"""The relay: tails the event store in commit-safe order and publishes every event on
JetStream, in order, exactly as stored.

- Its checkpoint advances in PostgreSQL only after JetStream acknowledged the whole batch
  (while busy, at most every `checkpoint_every_s`: a crash republishes what came after the
  last one, and JetStream drops the copies by Nats-Msg-Id).
- Exactly one relay is active: leadership is a session advisory lock; others wait for it.
- It keeps the global hash chain (events.envelope.global_link) over every event in
  commit-safe order, anchored in relay_chain with every checkpoint.
- Each message carries its position and the position of the event before it
  (Hubbub-Prev), so a consumer can tell a gap or a repeat from the next event.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg
import structlog
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from events.envelope import ENCODER, Metadata, Position, global_link
from infra.db import configure, make_pool
from infra.metrics import serve_metrics
from infra.nats import AckedPublisher, connect, ensure_stream
from infra.settings import Settings
from infra.store import PROJECTION_CHANNEL, EventStore, RecordedEvent

log = structlog.get_logger(__name__)

RELAY_LOCK_KEY = 0x4855_4242_5245_4C59  # "HUBBRELY": one active relay per database
HEADER_POSITION = "Hubbub-Position"
HEADER_PREV = "Hubbub-Prev"

PUBLISHED = Counter("hubbub_relay_published_total", "Events published on JetStream")
RELAY_POSITION = Gauge("hubbub_relay_position", "Global position of the last published event")
RELAY_LAG_SECONDS = Gauge(
    "hubbub_relay_lag_seconds",
    "Age of the last published event when it was published; 0 once nothing is left",
)


_METADATA = msgspec.json.Decoder(Metadata)


class LostLeadership(RuntimeError):
    """Another relay advanced the checkpoint: this one must stop publishing."""


@dataclass(frozen=True)
class Checkpoint:
    at: Position
    chain_hash: bytes
    event_count: int


def headers_for(event: RecordedEvent, prev: Position) -> dict[str, str]:
    """NATS headers of one event's message."""
    headers = {
        "Nats-Msg-Id": str(event.event_id),
        HEADER_POSITION: event.at.token(),
        HEADER_PREV: prev.token(),
    }
    if b"traceparent" in event.metadata:  # cheap test first: most events carry none
        meta = _METADATA.decode(event.metadata)
        if meta.traceparent:
            headers["traceparent"] = meta.traceparent
    return headers


class Relay:
    """Publishes the log to JetStream while it holds leadership."""

    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool,
        js: JetStreamContext,
        *,
        batch_size: int = 1000,
        idle_poll_s: float = 0.5,
        busy_poll_s: float = 0.001,
        ack_timeout_s: float = 5.0,
        checkpoint_every_s: float = 0.05,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.store = EventStore(pool, notify=False)
        self.js = js
        # nats-py's JetStream context keeps its client private; the publisher needs it.
        self.publisher = AckedPublisher(js._nc)
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        self.busy_poll_s = busy_poll_s
        self.ack_timeout_s = ack_timeout_s
        self.checkpoint_every_s = checkpoint_every_s
        self.leading = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Lead and publish until `stop`; survives PostgreSQL and NATS outages."""
        backoff = 0.1
        while not stop.is_set():
            try:
                await self._lead(stop)
                return
            except (psycopg.OperationalError, LostLeadership) as e:
                log.warning("relay lost its footing; starting over", error=str(e))
            self.leading.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 5.0)

    async def _lead(self, stop: asyncio.Event) -> None:
        assert self.settings.database_url
        url = self.settings.database_url
        async with (
            await psycopg.AsyncConnection.connect(
                url, autocommit=True, application_name="hubbub-relay-leader"
            ) as leader,
            await psycopg.AsyncConnection.connect(
                url, autocommit=True, application_name="hubbub-relay-checkpoint"
            ) as writer,
        ):
            configure(leader)
            configure(writer)
            while not stop.is_set():
                cur = await leader.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK_KEY,))
                row = await cur.fetchone()
                if row and row[0]:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
            if stop.is_set():
                return
            log.info("relay is the leader")
            self.leading.set()
            await leader.execute("LISTEN hubbub_events")
            # A projector's batch is a write transaction: while it is open, events committed
            # after it began are past the commit-safe horizon. Its commit is when they come
            # within reach, so it wakes the relay too.
            await leader.execute(sql.SQL("LISTEN {}").format(sql.Identifier(PROJECTION_CHANNEL)))
            # Checkpoints are written with asynchronous commit, on a connection of their own
            # (the leader's waits for NOTIFYs): one lost in a crash only means republishing,
            # which JetStream and consumers absorb.
            await writer.execute("SET synchronous_commit = off")
            await self._publish_loop(stop, leader, writer)

    async def _publish_loop(
        self,
        stop: asyncio.Event,
        leader: psycopg.AsyncConnection[Any],
        writer: psycopg.AsyncConnection[Any],
    ) -> None:
        checkpoint = saved = await self.load_checkpoint()
        saved_at = last_busy = time.monotonic()
        empty_reads = 0
        # Checkpoints are written while the next batches are read and published, at most
        # one every checkpoint_every_s while busy (a batch at 1,000 events/s holds a few
        # events: a write each would cost more than their publishing), and at once when
        # the relay goes idle. Writes stay in order (one at a time), and each is fenced.
        saving: asyncio.Task[None] | None = None

        async def save(*, now: bool) -> None:
            nonlocal saving, saved, saved_at
            if saving is not None:
                if not saving.done() and not now:
                    return
                await saving  # raises LostLeadership if the fence stopped it
                saving = None
            if checkpoint != saved and (
                now or time.monotonic() - saved_at >= self.checkpoint_every_s
            ):
                saving = asyncio.create_task(self.write_checkpoint(writer, saved, checkpoint))
                saved, saved_at = checkpoint, time.monotonic()

        try:
            while not stop.is_set():
                events = await self.store.read_all(checkpoint.at, limit=self.batch_size)
                if events:
                    await self._publish_with_retry(checkpoint.at, events, stop)
                    checkpoint = advance(checkpoint, events)
                    await save(now=False)
                    last_busy = time.monotonic()
                    empty_reads = 0
                    if len(events) < self.batch_size:
                        # That was everything committed: reading again at once mostly finds
                        # nothing (and a read costs as much as publishing a few events).
                        await asyncio.sleep(self.busy_poll_s)
                    continue
                RELAY_LAG_SECONDS.set(0.0)  # nothing left to publish
                # Recently busy: more events are likely on their way, and the writers'
                # NOTIFY comes at most every 5 ms; so read again at the next NOTIFY (a
                # writer's, or a projector's commit, which may have held back the horizon)
                # or poll, soon at first, then less often (doubling up to 4 ms). Idle: wait
                # for a NOTIFY, poll as a fallback (first dropping those that came while
                # busy: each would cost a read).
                if time.monotonic() - last_busy < 0.25:
                    await save(now=False)
                    empty_reads += 1
                    await self._wait_for_notify(
                        leader, min(self.busy_poll_s * 2**empty_reads, 0.004)
                    )
                else:
                    await save(now=True)
                    async for _ in leader.notifies(timeout=0.0):
                        pass
                    await self._wait_for_notify(leader, self.idle_poll_s)
        finally:
            await save(now=True)
            if saving is not None:
                await saving

    async def _wait_for_notify(
        self, leader: psycopg.AsyncConnection[object], seconds: float
    ) -> None:
        """Until a writer's NOTIFY or `seconds` have passed, whichever is first (then the caller polls,
        and sees `stop`)."""
        async for _ in leader.notifies(timeout=seconds, stop_after=1):
            break

    async def load_checkpoint(self) -> Checkpoint:
        """Where publishing resumes."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT txid, position, chain_hash, event_count FROM relay_checkpoint WHERE id = 1"
            )
            row = await cur.fetchone()
        assert row is not None, "relay_checkpoint is seeded by the 0001 migration"
        return Checkpoint(Position(row[0], row[1]), row[2], row[3])

    async def _publish_with_retry(
        self, prev: Position, events: Sequence[RecordedEvent], stop: asyncio.Event
    ) -> None:
        backoff = 0.1
        while True:
            try:
                await self.publish(events, prev)
                return
            except (NatsError, TimeoutError, OSError) as e:
                if stop.is_set():
                    raise LostLeadership("stopping with unpublished events") from e
                log.warning("publishing failed; retrying", error=repr(e), backoff=backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 5.0)
                # NATS may have come back without its data: no stream, no acks, for ever.
                try:
                    await ensure_stream(self.js, self.settings)
                except (NatsError, OSError, TimeoutError) as e2:
                    log.info("jetstream stream not checked", error=repr(e2))

    async def publish(self, events: Sequence[RecordedEvent], prev: Position) -> None:
        """Publish a batch in order and wait until JetStream acknowledged every message."""
        messages = []
        for event in events:
            subject = self.settings.subject(event.stream_id.split("-", 1)[0], event.type)
            messages.append((subject, ENCODER.encode(event.envelope()), headers_for(event, prev)))
            prev = event.at
        acks = await self.publisher.publish(messages, self.ack_timeout_s)
        for ack in acks:
            if ack.stream != self.settings.nats_stream:
                raise NatsError(
                    f"published into stream {ack.stream}, not {self.settings.nats_stream}"
                )
        PUBLISHED.inc(len(events))
        RELAY_POSITION.set(events[-1].position)
        RELAY_LAG_SECONDS.set(max(0.0, time.time() - events[-1].recorded_at.timestamp()))

    async def write_checkpoint(
        self, conn: psycopg.AsyncConnection[Any], old: Checkpoint, new: Checkpoint
    ) -> None:
        """Move the checkpoint from `old` to `new` and anchor the chain, in one statement.

        The fence (`old` in the WHERE clause) stops a relay that lost its leadership
        unawares.
        """
        cur = await conn.execute(
            "WITH moved AS (UPDATE relay_checkpoint SET txid = %s::xid8, position = %s,"
            " chain_hash = %s, event_count = %s, updated_at = now()"
            " WHERE id = 1 AND txid = %s::xid8 AND position = %s RETURNING 1)"
            " INSERT INTO relay_chain (txid, position, chain_hash, event_count)"
            " SELECT %s::xid8, %s, %s, %s FROM moved",
            (str(new.at.txid), new.at.position, new.chain_hash, new.event_count,
             str(old.at.txid), old.at.position,
             str(new.at.txid), new.at.position, new.chain_hash, new.event_count),
        )  # fmt: skip
        if cur.rowcount != 1:
            raise LostLeadership("the relay checkpoint moved under us")


def advance(checkpoint: Checkpoint, events: Sequence[RecordedEvent]) -> Checkpoint:
    """The checkpoint after `events`: their last position, the global chain through them."""
    chain = checkpoint.chain_hash
    for event in events:
        chain = global_link(chain, event.hash)
    return Checkpoint(events[-1].at, chain, checkpoint.event_count + len(events))


async def connect_jetstream(settings: Settings, stop: asyncio.Event) -> NATS | None:
    """Connect to NATS, retrying until it answers or `stop` is set."""
    assert settings.nats_url
    backoff = 0.2
    while not stop.is_set():
        try:
            nc = await connect(settings.nats_url, name="hubbub-relay")
            await ensure_stream(nc.jetstream(), settings)
            return nc
        except (NatsError, OSError, TimeoutError) as e:
            log.warning("nats unavailable; retrying", error=repr(e), backoff=backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 5.0)
    return None


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT/SIGTERM set `stop`, so the process finishes its batch and exits cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def main(settings: Settings) -> None:
    """`hubbub relay`: run one relay (it waits its turn if another one leads)."""
    assert settings.database_url and settings.nats_url, "the CLI resolves the URLs"
    stop = asyncio.Event()
    stop_on_signals(stop)
    serve_metrics(settings, "relay")
    nc = await connect_jetstream(settings, stop)
    if nc is None:
        return
    pool = make_pool(settings.database_url, min_size=1, max_size=4, name="hubbub-relay")
    await pool.open()
    try:
        await Relay(settings, pool, nc.jetstream()).run(stop)
    finally:
        await pool.close()
        with contextlib.suppress(Exception):  # NATS may be away: nothing left to flush then
            await nc.drain()
