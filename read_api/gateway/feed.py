"""Reading the feed read model (`rm_feed.frames`): tailing it in log order, and a topic's
frames by seq for backfills.

The tail only advances to the least checkpoint of the feed and of the read models a client
reads back (channels, messages, notifications, auctions), so a client that fetches from
the read API right after a frame sees at least the state the frame announced. The feed's
rows commit in one transaction with its checkpoint, so every frame at or before that
position is there to be read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec
import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from events.envelope import Position
from read_api.freshness import Freshness
from read_api.gateway import metrics, protocol

log = structlog.get_logger(__name__)

# The read models a frame's reader may look at next: the tail waits for all of them.
SOURCES: Final = ("feed", "channels", "messages", "notifications", "auctions")
TAIL_BATCH: Final = 2000
BACKFILL_BATCH: Final = 500
_IDLE_WAIT_S: Final = 1.0

_MAX_NOTICES: Final = 1000
_COLUMNS = "topic, seq, position, name, data, event_id::text, traceparent"
_BETWEEN = (
    f"SELECT {_COLUMNS} FROM rm_feed.frames WHERE position > %s AND position <= %s"
    " ORDER BY position, topic, seq LIMIT %s"
)
_AT = f"SELECT {_COLUMNS} FROM rm_feed.frames WHERE position = %s ORDER BY topic, seq"
_TOPIC = (
    f"SELECT {_COLUMNS} FROM rm_feed.frames WHERE topic = %s AND seq >= %s AND position <= %s"
    " ORDER BY seq LIMIT %s"
)
_LAST_SEQ = (
    "SELECT seq FROM rm_feed.frames WHERE topic = %s AND position <= %s ORDER BY seq DESC LIMIT 1"
)


class FeedFrame:
    """One row of the feed; its event frame is encoded at most once, when first sent. The
    event's id and the traceparent of the request that caused it are for the logs."""

    __slots__ = (
        "_payload",
        "_wire",
        "data",
        "event_id",
        "name",
        "position",
        "seq",
        "topic",
        "traceparent",
    )

    def __init__(
        self,
        topic: str,
        seq: int,
        position: str,
        name: str,
        data: bytes,
        *,
        event_id: str = "",
        traceparent: str | None = None,
    ) -> None:
        self.topic = topic
        self.seq = seq
        self.position = position
        self.name = name
        self.data = data
        self.event_id = event_id
        self.traceparent = traceparent
        self._payload: bytes | None = None
        self._wire: bytes | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> FeedFrame:
        """From a row of `_COLUMNS`."""
        return cls(row[0], int(row[1]), row[2], row[3], bytes(row[4]),
                   event_id=row[5], traceparent=row[6])  # fmt: skip

    def payload(self) -> bytes:
        """The event frame's JSON."""
        if self._payload is None:
            event = protocol.Event(topic=self.topic, seq=self.seq, position=self.position,
                                   name=self.name, data=msgspec.Raw(self.data))  # fmt: skip
            self._payload = protocol.encode(event)
        return self._payload

    def wire(self) -> bytes:
        """The event frame, framed for the socket (the same bytes for every subscriber)."""
        if self._wire is None:
            self._wire = protocol.wire(self.payload())
        return self._wire

    def view(self) -> dict[str, Any]:
        """The frame's client view, decoded."""
        view: dict[str, Any] = msgspec.json.decode(self.data)
        return view


class _Notice(msgspec.Struct, frozen=True):
    """A projector batch's frames (projections.feed.FRAMES_CHANNEL)."""

    after: str
    upto: str
    frames: list[tuple[str, int, str, str, msgspec.Raw, str, str | None]] | None = None


_NOTICE = msgspec.json.Decoder(_Notice)


class FeedReader:
    """Queries over rm_feed.frames."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def _select(self, query: str, params: tuple[Any, ...]) -> list[FeedFrame]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, params)
            return [FeedFrame.from_row(row) for row in await cur.fetchall()]

    async def between(
        self, after: Position, upto: Position, limit: int = TAIL_BATCH
    ) -> tuple[list[FeedFrame], Position]:
        """Frames after `after` up to `upto` in log order, at most about `limit` of them,
        and the position they reach (`upto` when all were read). A position's frames are
        never split between two answers."""
        frames = await self._select(_BETWEEN, (after.token(), upto.token(), limit))
        if len(frames) < limit:
            return frames, upto
        last = frames[-1].position
        whole = [f for f in frames if f.position < last]
        if not whole:  # one event made `limit` frames or more: read all of them
            whole = await self._select(_AT, (last,))
            return whole, Position.parse(last)
        return whole, Position.parse(whole[-1].position)

    async def topic_frames(
        self, topic: str, from_seq: int, upto: Position, limit: int = BACKFILL_BATCH
    ) -> list[FeedFrame]:
        """The topic's frames from seq `from_seq` on, up to position `upto`, in seq order."""
        return await self._select(_TOPIC, (topic, from_seq, upto.token(), limit))

    async def last_seq(self, topic: str, upto: Position) -> int:
        """The seq of the topic's last frame at or before `upto` (0 when it has none)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_LAST_SEQ, (topic, upto.token()))
            row = await cur.fetchone()
        return int(row[0]) if row else 0


Deliver = Callable[[list[FeedFrame], Position], None]


class Tailer:
    """Follows the feed in log order and hands each batch of frames to `deliver`, together
    with the position they reach. Woken by the projector's NOTIFY (through Freshness)."""

    def __init__(
        self, reader: FeedReader, freshness: Freshness, deliver: Deliver, tail: Position
    ) -> None:
        self.reader = reader
        self.freshness = freshness
        self.deliver = deliver
        self.tail = tail  # frames up to here were delivered (or came before the start)
        # The projector's notices of its batches' frames (FRAMES_CHANNEL, given to
        # `noticed`), by the position each batch starts after: (where it ends, its frames).
        self.notices: dict[Position, tuple[Position, list[FeedFrame]]] = {}

    def noticed(self, payload: str) -> None:
        """Keep a notice of a batch's frames until the tail reaches the batch. One that
        cannot be read, that came too late or that has no frames (too many for a
        notification) is dropped: the tail then reads those frames from the feed."""
        try:
            notice = _NOTICE.decode(payload)
            after, upto = Position.parse(notice.after), Position.parse(notice.upto)
        except (msgspec.DecodeError, ValueError):
            log.warning("unreadable frames notice", payload=payload[:200])
            return
        if notice.frames is None or after < self.tail:
            return
        if len(self.notices) >= _MAX_NOTICES:  # the tail is stuck behind them: start afresh
            self.notices.clear()
        # A notice lists each frame's columns in _COLUMNS' order, as the tail's query does.
        self.notices[after] = (upto, [FeedFrame.from_row(row) for row in notice.frames])

    def _from_notices(self, tail: Position, upto: Position) -> tuple[list[FeedFrame], Position]:
        """The noticed frames that follow on from `tail`, batch after batch, up to at most
        `upto`, and the position they reach (`tail` when there are none)."""
        frames: list[FeedFrame] = []
        while (notice := self.notices.get(tail)) is not None and notice[0] <= upto:
            del self.notices[tail]
            tail = notice[0]
            frames += notice[1]
        if self.notices:
            for stale in [at for at in self.notices if at < tail]:
                del self.notices[stale]
        return frames, tail

    async def run(self) -> None:
        """Tail for ever (cancel to stop); database trouble is logged and retried."""
        tail = self.tail
        backoff = 0.1
        while True:
            upto = self.freshness.position_of(SOURCES)
            if upto <= tail:
                await self.freshness.wait(
                    list(SOURCES), Position(tail.txid, tail.position + 1), _IDLE_WAIT_S
                )
                continue
            frames, reached = self._from_notices(tail, upto)
            if reached > tail:  # what the projector said it wrote: no query
                metrics.TAIL_FROM_NOTICES.inc()
                tail = self.tail = reached
                self.deliver(frames, reached)
                continue
            try:
                frames, reached = await self.reader.between(tail, upto)
            except psycopg.Error as e:
                log.warning("could not read the feed", error=str(e))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            metrics.TAIL_FROM_FEED.inc()
            tail = self.tail = reached
            self.deliver(frames, reached)
