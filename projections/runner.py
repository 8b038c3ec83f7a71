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
import functools
import time
from collections.abc import Sequence
from typing import NamedTuple

import msgspec
import psycopg
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from prometheus_client import Counter, Gauge, Histogram
from psycopg_pool import AsyncConnectionPool

from events.envelope import ENVELOPE_DECODER, Envelope, Position, traced
from infra.db import make_pool
from infra.metrics import serve_metrics
from infra.nats import PullFeed, connect, ensure_stream
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
NOTIFY_QUEUE_USAGE = Gauge(
    "hubbub_notify_queue_usage",
    "Fraction of PostgreSQL's NOTIFY queue in use (pg_notification_queue_usage): a listener"
    " that stopped reading holds it; once full, every NOTIFYing commit fails",
)
ANNOUNCING = Gauge(
    "hubbub_projector_announcing",
    "1 while the projector announces its batches' frames to the gateways, 0 while it holds"
    " them back (the NOTIFY queue is filling)",
)
APPLY_SECONDS = Histogram(
    "hubbub_projection_apply_seconds",
    "Time to apply one batch (one transaction, one or every projection) and its checkpoint",
    ["mode"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)


CATCH_UP_BATCH = 5000
# Frame notices (projections.feed.announce) carry up to 8 kB a batch, a hundred times what
# the other notifications do, so a listener that stops reading (a gateway stopped, a
# half-open connection) fills PostgreSQL's 8 GB queue within hours at 1,000 events a
# second, and then every notifying commit fails. Past this share of the queue the
# projector stops announcing (the gateways read the feed instead) until it drains.
ANNOUNCE_BELOW_QUEUE_USAGE = 0.05
ACK_EVERY_S = 0.02


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
        announce_below: float = ANNOUNCE_BELOW_QUEUE_USAGE,
    ) -> None:
        self.settings = settings
        self.announce_below = announce_below
        self.announcing = True
        ANNOUNCING.set(1)
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
        """Catch every projection up with the store. Those at one checkpoint (usually all)
        go together: one read and one transaction a batch, not one each."""
        async with self._applying:
            groups: dict[Position, list[Projection]] = {}
            for p in self.projections:
                groups.setdefault(self.checkpoints[p.name], []).append(p)
            done: set[str] = set()
            for group in groups.values():
                if len(group) > 1 and await self._catch_up_together(group):
                    done.update(p.name for p in group)
            for name in done:
                CATCH_UPS.labels(name, reason).inc()
                PROJECTION_LAG_SECONDS.labels(name).set(0.0)
            await asyncio.gather(
                *(self.catch_up(p, reason=reason) for p in self.projections if p.name not in done)
            )

    async def _catch_up_together(self, projections: Sequence[Projection]) -> bool:
        """Catch up projections that share a checkpoint in shared batches, for as long as
        they do; True when they reached the end of the store together."""
        after = self.checkpoints[projections[0].name]
        while all(self.checkpoints[p.name] == after for p in projections):
            events = await self.store.read_all(after, limit=CATCH_UP_BATCH)
            if not events:
                return True
            upto = events[-1].at
            batches = [Batch(p, live_schema(p.name), after, events, upto) for p in projections]
            if not await self._apply_together(batches):
                return False
            after = upto
        return False

    async def _apply(
        self,
        projection: Projection,
        after: Position,
        events: Sequence[RecordedEvent | Envelope],
        upto: Position | None = None,
    ) -> None:
        if upto is None:
            upto = events[-1].at
        started = time.perf_counter()
        try:
            async with self.pool.connection() as conn:
                await apply_batch(
                    conn, projection, live_schema(projection.name), after, events, upto,
                    announce=self.announcing,
                )  # fmt: skip
        except CheckpointMoved as moved:
            # A rebuild swapped in a new schema, or another projector got there first.
            log.info(
                "checkpoint moved; reloading", projection=projection.name, at=moved.actual.token()
            )
            self.checkpoints[projection.name] = moved.actual
            return
        APPLY_SECONDS.labels("one").observe(time.perf_counter() - started)
        self.checkpoints[projection.name] = upto
        _applied(projection.name, events, upto)
        _log_traced(events, (projection.name,))

    async def handle(self, batch: Sequence[tuple[Envelope, Position]]) -> None:
        """Apply a batch of (envelope, previous position) pairs from NATS to every projection."""
        async with self._applying:
            await self._handle(batch)
        self._last_nats_batch = time.monotonic()

    async def _handle(self, batch: Sequence[tuple[Envelope, Position]]) -> None:
        # The usual case, every projection just before the batch: one transaction for all
        # (a small batch costs one commit, not one per projection). Anything else (a gap, a
        # moved checkpoint, a failing projection) goes projection by projection. Positions
        # are parsed once, and the batch is cut once for each checkpoint (usually one).
        items = [(e, e.at, prev) for e, prev in batch]
        cuts: dict[Position, _Cut] = {}
        together = []
        for projection in self.projections:
            checkpoint = self.checkpoints[projection.name]
            cut = _cut_at(cuts, items, checkpoint)
            if cut.events and cut.contiguous:
                together.append(Batch(projection, live_schema(projection.name), checkpoint,
                                      cut.events, cut.upto))  # fmt: skip
        if len(together) > 1:
            await self._apply_together(together)
        for projection in self.projections:
            await self._handle_one(projection, items, cuts)

    async def _apply_together(self, together: Sequence[Batch]) -> bool:
        """Apply several projections' batches in one transaction; False when that failed
        (nothing was applied: the caller goes projection by projection)."""
        started = time.perf_counter()
        try:
            async with self.pool.connection() as conn:
                await apply_together(conn, together, announce=self.announcing)
        except psycopg.Error as e:
            log.info("batch not applied together; one projection at a time", error=str(e))
            return False
        APPLY_SECONDS.labels("together").observe(time.perf_counter() - started)
        lag = _age(together[0].events[-1])  # every batch ends with the same event
        for b in together:
            self.checkpoints[b.projection.name] = b.upto
            _count_applied(b.projection.name, len(b.events), b.upto, lag)
        _log_traced(
            max((b.events for b in together), key=len),
            tuple(b.projection.name for b in together),
        )
        return True

    async def _handle_one(
        self, projection: Projection, items: Sequence[_Item], cuts: dict[Position, _Cut]
    ) -> None:
        for _attempt in range(3):
            checkpoint = self.checkpoints[projection.name]
            cut = _cut_at(cuts, items, checkpoint)
            if not cut.events:
                break
            if cut.contiguous:
                await self._apply(projection, checkpoint, cut.events, cut.upto)
            else:
                await self.catch_up(projection, until=cut.upto, reason="gap")
            if self.checkpoints[projection.name] >= cut.upto:
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
        """Set the lag gauges against the store's head (one short index read), and the
        NOTIFY queue's usage, announcing frames or not by it."""
        try:
            head = await self.store.head()
            usage = await self.notify_queue_usage()
        except psycopg.Error as e:
            log.warning("head or NOTIFY queue not read; lag not measured", error=str(e))
            return
        NOTIFY_QUEUE_USAGE.set(usage)
        announcing = usage < self.announce_below
        if announcing != self.announcing:
            log.warning("frame notices " + ("resumed" if announcing else "held back"),
                        notify_queue_usage=usage, threshold=self.announce_below)  # fmt: skip
            self.announcing = announcing
            ANNOUNCING.set(int(announcing))
        HEAD_POSITION.set(head.position)
        for name, checkpoint in self.checkpoints.items():
            # Positions count every event ever appended, so the difference is the number
            # of events still to apply (rolled-back appends leave small holes: an upper bound).
            PROJECTION_LAG_EVENTS.labels(name).set(max(0, head.position - checkpoint.position))

    async def notify_queue_usage(self) -> float:
        """The fraction of PostgreSQL's NOTIFY queue in use."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute("SELECT pg_notification_queue_usage()")).fetchone()
        return float(row[0]) if row else 0.0

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
        await self._ensure_consumer(js)
        feed = PullFeed(nc, self.settings.nats_stream, self.durable, batch=self.fetch_batch)
        await feed.start()
        try:
            # Events published before the consumer existed come from the store.
            await self.catch_up_all("subscribed")
            last_store_check = acked_at = time.monotonic()
            # AckPolicy.ALL: acknowledging a message acknowledges every one before it, so
            # the last applied is acknowledged at most every ACK_EVERY_S while busy (one
            # acknowledgement a batch was a tenth of the projector's CPU at 1,000 events/s),
            # and at once when the stream goes quiet. Unacknowledged ones would only come
            # again after ack_wait, and the checkpoints skip them.
            unacked: Msg | None = None
            try:
                while not stop.is_set():
                    if not nc.is_connected:
                        return
                    msgs = await feed.next_batch(self.quiet_s)
                    if not msgs:
                        if unacked is not None:
                            await unacked.ack()
                            unacked, acked_at = None, time.monotonic()
                        continue  # quiet: the store poller looks at PostgreSQL
                    batch = [parsed for parsed in map(_parse, msgs) if parsed is not None]
                    if len(batch) < len(msgs):
                        await self.catch_up_all("bad_message")
                    if batch:
                        await self.handle(batch)
                    unacked = msgs[-1]
                    if time.monotonic() - acked_at >= ACK_EVERY_S:
                        await unacked.ack()
                        unacked, acked_at = None, time.monotonic()
                    if time.monotonic() - last_store_check > 5.0:
                        # A busy stream is never quiet; still look at the store now and then.
                        await self.catch_up_all("periodic")
                        last_store_check = time.monotonic()
            finally:
                if unacked is not None and nc.is_connected:
                    with contextlib.suppress(NatsError, OSError, TimeoutError):
                        await unacked.ack()
        finally:
            await feed.stop()

    async def _ensure_consumer(self, js: JetStreamContext) -> None:
        """Create the durable pull consumer unless it exists (its configuration is kept)."""
        try:
            await js.consumer_info(self.settings.nats_stream, self.durable)
            return
        except NotFoundError:
            pass
        await js.add_consumer(
            self.settings.nats_stream,
            config=ConsumerConfig(
                name=self.durable,
                durable_name=self.durable,
                filter_subject=self.settings.subject_filter,
                ack_policy=AckPolicy.ALL,
                deliver_policy=DeliverPolicy.NEW,
                max_ack_pending=20_000,
                ack_wait=30.0,
            ),
        )


@functools.cache
def _series(projection: str) -> tuple[Counter, Gauge, Gauge]:
    """A projection's applied, position and lag series (labels() costs a lookup a call)."""
    return (
        APPLIED.labels(projection),
        PROJECTION_POSITION.labels(projection),
        PROJECTION_LAG_SECONDS.labels(projection),
    )


def _applied(projection: str, events: Sequence[RecordedEvent | Envelope], upto: Position) -> None:
    _count_applied(projection, len(events), upto, _age(events[-1]))


def _age(event: RecordedEvent | Envelope) -> float:
    """Seconds since the event was recorded (0 if the clocks disagree)."""
    return max(0.0, time.time() - event.recorded_at.timestamp())


def _count_applied(projection: str, count: int, upto: Position, lag: float) -> None:
    applied, position, lag_seconds = _series(projection)
    applied.inc(count)
    position.set(upto.position)
    lag_seconds.set(lag)


def _log_traced(events: Sequence[RecordedEvent | Envelope], projections: Sequence[str]) -> None:
    """One log line for each applied event that carries a W3C traceparent (from the HTTP
    request that caused it), with its traceparent and correlation id bound as context,
    so a trace can be followed from the request into the read models. INFO when the
    trace is sampled (its flags ask for recording), DEBUG otherwise; events without a
    traceparent, most of them, cost one substring test."""
    for event in events:
        metadata = event.metadata if isinstance(event.metadata, bytes) else bytes(event.metadata)
        trace = traced(metadata)
        if trace is None or trace.traceparent is None:
            continue
        sampled = trace.traceparent.endswith(("1", "3", "5", "7", "9", "b", "d", "f"))
        with structlog.contextvars.bound_contextvars(
            traceparent=trace.traceparent, correlation_id=trace.correlation_id
        ):
            (log.info if sampled else log.debug)(
                "event applied", event_id=str(event.event_id), type=event.type,
                position=event.at.token(), projections=list(projections),
            )  # fmt: skip


_Item = tuple[Envelope, Position, Position]  # an event, its position, the one before it


class _Cut(NamedTuple):
    """What of a batch lies past a checkpoint, and whether it follows on from it."""

    events: list[Envelope]
    upto: Position
    contiguous: bool


def _cut_at(cuts: dict[Position, _Cut], items: Sequence[_Item], checkpoint: Position) -> _Cut:
    """The batch's cut at `checkpoint`, remembered in `cuts` for the next projection there."""
    cut = cuts.get(checkpoint)
    if cut is None:
        fresh = [item for item in items if item[1] > checkpoint]
        expected, contiguous = checkpoint, True
        for _, at, prev in fresh:
            if prev != expected:
                contiguous = False
                break
            expected = at
        upto = fresh[-1][1] if fresh else checkpoint
        cut = cuts[checkpoint] = _Cut([e for e, _, _ in fresh], upto, contiguous)
    return cut


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
