"""The projector: keeps every projection's read model up to date.

It consumes JetStream with a durable pull consumer and applies events in batches, each
batch in one transaction with the projection's checkpoint. Every message names the event
before it (Hubbub-Prev), so the runner knows when NATS dropped, repeated or reordered
something; then, and at start, and whenever NATS is quiet or away, it reads the store
directly. PostgreSQL is the system of record: nothing NATS does can corrupt a read model.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import msgspec
import psycopg
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter, Gauge, Histogram
from psycopg_pool import AsyncConnectionPool

from events.envelope import ENVELOPE_DECODER, Envelope, Position
from infra.db import make_pool
from infra.metrics import serve_metrics
from infra.nats import connect, ensure_stream
from infra.relay import HEADER_PREV, stop_on_signals
from infra.settings import Settings
from infra.store import EventStore, RecordedEvent
from projections.ops import rebuild_projection
from projections.registry import ALL, by_name
from projections.runtime import (
    Batch,
    CheckpointMoved,
    Projection,
    apply_batch,
    apply_together,
    ensure_schema,
    live_schema,
    read_checkpoint,
    schema_version,
)

log = structlog.get_logger(__name__)

APPLIED = Counter(
    "hubbub_projection_applied_total", "Events passed by a projection", ["projection"]
)
CATCH_UPS = Counter(
    "hubbub_projection_catchups_total", "Reads straight from the store", ["projection", "reason"]
)
PROJECTION_POSITION = Gauge("hubbub_projection_position", "Global position applied", ["projection"])
PROJECTION_LAG_SECONDS = Gauge(
    "hubbub_projection_lag_seconds",
    "Age of the last event applied when it was applied; 0 once the store has nothing newer",
    ["projection"],
)
PROJECTION_LAG_EVENTS = Gauge(
    "hubbub_projection_lag_events",
    "Events in the store past the projection's checkpoint (global positions between them)",
    ["projection"],
)
HEAD_POSITION = Gauge("hubbub_store_head_position", "Global position of the store's last event")
APPLY_SECONDS = Histogram(
    "hubbub_projection_apply_seconds",
    "Time to apply one batch (one transaction, one or every projection) and its checkpoint",
    ["mode"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)


class _Trace(msgspec.Struct):
    correlation_id: str | None = None
    traceparent: str | None = None


_TRACE = msgspec.json.Decoder(_Trace)

CATCH_UP_BATCH = 5000


class ProjectionRunner:
    """Applies events to a set of projections, from NATS when it can, from PostgreSQL always."""

    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool,
        projections: Sequence[Projection] = ALL,
        *,
        consumer: str = "projector",
        fetch_batch: int = 500,
        quiet_s: float = 0.5,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.store = EventStore(pool, notify=False)
        self.projections = list(projections)
        self.durable = f"{settings.nats_stream}_{consumer}"
        self.fetch_batch = fetch_batch
        self.quiet_s = quiet_s
        self.checkpoints: dict[str, Position] = {}
        self.ready = asyncio.Event()
        # The NATS follower and the store poller both apply; one at a time.
        self._applying = asyncio.Lock()
        self._last_nats_batch = 0.0

    async def start(self) -> None:
        """Create missing read-model schemas, rebuild stale ones, load the checkpoints."""
        async with self.pool.connection() as conn:
            for projection in self.projections:
                if await ensure_schema(conn, projection):
                    log.info("read model created", projection=projection.name)
                built = await schema_version(conn, live_schema(projection.name))
                if built != projection.version:
                    # The code reads and writes other tables than the live schema has: build
                    # the new ones beside it (readers keep the old) and swap.
                    log.info("read model is stale; rebuilding", projection=projection.name,
                             built=built, version=projection.version)  # fmt: skip
                    await rebuild_projection(self.pool, projection)
                self.checkpoints[projection.name] = await read_checkpoint(
                    conn, live_schema(projection.name)
                )

    async def catch_up(
        self, projection: Projection, *, until: Position | None = None, reason: str
    ) -> None:
        """Apply everything after the checkpoint straight from the store (up to `until`)."""
        CATCH_UPS.labels(projection.name, reason).inc()
        while True:
            after = self.checkpoints[projection.name]
            if until is not None and after >= until:
                return
            events = await self.store.read_all(after, limit=CATCH_UP_BATCH)
            if not events:
                PROJECTION_LAG_SECONDS.labels(projection.name).set(0.0)
                return
            await self._apply(projection, after, events)

    async def catch_up_all(self, reason: str) -> None:
        async with self._applying:
            await asyncio.gather(*(self.catch_up(p, reason=reason) for p in self.projections))

    async def _apply(
        self, projection: Projection, after: Position, events: Sequence[RecordedEvent | Envelope]
    ) -> None:
        upto = _position(events[-1])
        started = time.perf_counter()
        try:
            async with self.pool.connection() as conn:
                await apply_batch(
                    conn, projection, live_schema(projection.name), after, events, upto
                )
        except CheckpointMoved as moved:
            # A rebuild swapped in a new schema, or another projector got there first.
            log.info(
                "checkpoint moved; reloading", projection=projection.name, at=moved.actual.token()
            )
            self.checkpoints[projection.name] = moved.actual
            return
        APPLY_SECONDS.labels("one").observe(time.perf_counter() - started)
        self.checkpoints[projection.name] = upto
        _applied(projection.name, events)
        _log_traced(events, (projection.name,))

    async def handle(self, batch: Sequence[tuple[Envelope, Position]]) -> None:
        """Apply a batch of (envelope, previous position) pairs from NATS to every projection."""
        async with self._applying:
            await self._handle(batch)
        self._last_nats_batch = time.monotonic()

    async def _handle(self, batch: Sequence[tuple[Envelope, Position]]) -> None:
        # The usual case, every projection just before the batch: one transaction for all
        # (a small batch costs one commit, not one per projection). Anything else (a gap, a
        # moved checkpoint, a failing projection) goes projection by projection.
        together = []
        for projection in self.projections:
            checkpoint = self.checkpoints[projection.name]
            fresh = [(e, prev) for e, prev in batch if e.at > checkpoint]
            if fresh and _contiguous(checkpoint, fresh):
                events = [e for e, _ in fresh]
                together.append(Batch(projection, live_schema(projection.name), checkpoint,
                                      events, events[-1].at))  # fmt: skip
        if len(together) > 1:
            started = time.perf_counter()
            try:
                async with self.pool.connection() as conn:
                    await apply_together(conn, together)
            except psycopg.Error as e:
                log.info("batch not applied together; one projection at a time", error=str(e))
            else:
                APPLY_SECONDS.labels("together").observe(time.perf_counter() - started)
                for b in together:
                    self.checkpoints[b.projection.name] = b.upto
                    _applied(b.projection.name, b.events)
                _log_traced(
                    max((b.events for b in together), key=len),
                    tuple(b.projection.name for b in together),
                )
        for projection in self.projections:
            await self._handle_one(projection, batch)

    async def _handle_one(
        self, projection: Projection, batch: Sequence[tuple[Envelope, Position]]
    ) -> None:
        for _attempt in range(3):
            checkpoint = self.checkpoints[projection.name]
            fresh = [(e, prev) for e, prev in batch if e.at > checkpoint]
            if not fresh:
                break
            if _contiguous(checkpoint, fresh):
                await self._apply(projection, checkpoint, [e for e, _ in fresh])
            else:
                await self.catch_up(projection, until=fresh[-1][0].at, reason="gap")
            if self.checkpoints[projection.name] >= fresh[-1][0].at:
                break

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop`: catch up, then follow NATS; the store poller runs throughout."""
        await self.start()
        await self.catch_up_all("start")
        self.ready.set()
        poller = asyncio.create_task(self._poll_store(stop))
        nc: NATS | None = None
        try:
            while not stop.is_set():
                if nc is None or not nc.is_connected:
                    nc = await self._connect(nc)
                    if nc is None:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), self.quiet_s)
                        continue
                try:
                    await self._follow(nc, stop)
                except (NatsError, OSError, TimeoutError) as e:
                    log.warning("nats unavailable; the store poller carries on", error=repr(e))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.quiet_s)
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()

    async def _poll_store(self, stop: asyncio.Event) -> None:
        """Whenever NATS has brought nothing for a while (quiet, away, or a relay that is
        down), read the store: PostgreSQL is the system of record."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.quiet_s)
            if time.monotonic() - self._last_nats_batch >= self.quiet_s:
                await self.catch_up_all("poll")
            await self.measure_lag()

    async def measure_lag(self) -> None:
        """Set the lag gauges against the store's head (one short index read)."""
        try:
            head = await self.store.head()
        except psycopg.Error as e:
            log.warning("head not read; lag not measured", error=str(e))
            return
        HEAD_POSITION.set(head.position)
        for name, checkpoint in self.checkpoints.items():
            # Positions count every event ever appended, so the difference is the number
            # of events still to apply (rolled-back appends leave small holes: an upper bound).
            PROJECTION_LAG_EVENTS.labels(name).set(max(0, head.position - checkpoint.position))

    async def _connect(self, old: NATS | None) -> NATS | None:
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        assert self.settings.nats_url
        try:
            nc = await connect(self.settings.nats_url, name="hubbub-projector")
            await ensure_stream(nc.jetstream(), self.settings)
        except (NatsError, OSError, TimeoutError) as e:
            log.warning("nats unavailable", error=repr(e))
            return None
        return nc

    async def _follow(self, nc: NATS, stop: asyncio.Event) -> None:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            self.settings.subject_filter,
            durable=self.durable,
            stream=self.settings.nats_stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.ALL,
                deliver_policy=DeliverPolicy.NEW,
                max_ack_pending=20_000,
                ack_wait=30.0,
            ),
        )
        # Events published before the consumer existed come from the store.
        await self.catch_up_all("subscribed")
        last_store_check = time.monotonic()
        while not stop.is_set():
            if not nc.is_connected:
                return
            try:
                msgs = await sub.fetch(self.fetch_batch, timeout=self.quiet_s)
            except TimeoutError:
                msgs = []
            if not msgs:
                continue  # quiet: the store poller looks at PostgreSQL
            batch = [parsed for parsed in map(_parse, msgs) if parsed is not None]
            if len(batch) < len(msgs):
                await self.catch_up_all("bad_message")
            if batch:
                await self.handle(batch)
            await msgs[-1].ack()
            if time.monotonic() - last_store_check > 5.0:
                # A busy stream is never quiet; still look at the store now and then.
                await self.catch_up_all("periodic")
                last_store_check = time.monotonic()


def _position(event: RecordedEvent | Envelope) -> Position:
    return event.at


def _applied(projection: str, events: Sequence[RecordedEvent | Envelope]) -> None:
    APPLIED.labels(projection).inc(len(events))
    last = events[-1]
    PROJECTION_POSITION.labels(projection).set(last.at.position)
    PROJECTION_LAG_SECONDS.labels(projection).set(
        max(0.0, time.time() - last.recorded_at.timestamp())
    )


def _log_traced(events: Sequence[RecordedEvent | Envelope], projections: Sequence[str]) -> None:
    """One log line for each applied event that carries a W3C traceparent (from the HTTP
    request that caused it), with its traceparent and correlation id bound as context,
    so a trace can be followed from the request into the read models. INFO when the
    trace is sampled (its flags ask for recording), DEBUG otherwise; events without a
    traceparent, most of them, cost one substring test."""
    for event in events:
        metadata = event.metadata if isinstance(event.metadata, bytes) else bytes(event.metadata)
        if b"traceparent" not in metadata:
            continue
        try:
            trace = _TRACE.decode(metadata)
        except msgspec.DecodeError:
            continue
        if not trace.traceparent:
            continue
        sampled = trace.traceparent.endswith(("1", "3", "5", "7", "9", "b", "d", "f"))
        with structlog.contextvars.bound_contextvars(
            traceparent=trace.traceparent, correlation_id=trace.correlation_id
        ):
            (log.info if sampled else log.debug)(
                "event applied", event_id=str(event.event_id), type=event.type,
                position=event.at.token(), projections=list(projections),
            )  # fmt: skip


def _contiguous(checkpoint: Position, fresh: Sequence[tuple[Envelope, Position]]) -> bool:
    expected = checkpoint
    for envelope, prev in fresh:
        if prev != expected:
            return False
        expected = envelope.at
    return True


def _parse(msg: Msg) -> tuple[Envelope, Position] | None:
    try:
        envelope = ENVELOPE_DECODER.decode(msg.data)
        prev = Position.parse((msg.headers or {})[HEADER_PREV])
        envelope.at  # noqa: B018  # validates the token now rather than mid-apply
    except (msgspec.DecodeError, KeyError, ValueError) as e:
        log.warning("undecodable message skipped", subject=msg.subject, error=str(e))
        return None
    return envelope, prev


def selection(names: Sequence[str]) -> tuple[tuple[Projection, ...], str]:
    """The projections a projector process runs (every one when `names` is empty) and its
    JetStream durable consumer's name: one per set, so projectors that split the
    projections between them each get every message. KeyError names an unknown one."""
    if not names:
        return ALL, "projector"
    chosen = {by_name(name).name for name in names}
    projections = tuple(p for p in ALL if p.name in chosen)  # in ALL's order
    return projections, "projector-" + "-".join(p.name for p in projections)


async def main(settings: Settings, only: Sequence[str] = ()) -> None:
    """`hubbub projector`: keep every projection (or those named in `only`) up to date
    until SIGINT/SIGTERM."""
    assert settings.database_url and settings.nats_url, "the CLI resolves the URLs"
    projections, consumer = selection(only)
    stop = asyncio.Event()
    stop_on_signals(stop)
    serve_metrics(settings, "projector")
    # A connection per projection: a batch is applied to all of them at once.
    pool = make_pool(settings.database_url, min_size=1, max_size=len(projections) + 2,
                     name="hubbub-projector")  # fmt: skip
    await pool.open()
    try:
        await ProjectionRunner(settings, pool, projections, consumer=consumer).run(stop)
    except psycopg.OperationalError:
        log.exception("projector lost PostgreSQL")
        raise
    finally:
        await pool.close()
