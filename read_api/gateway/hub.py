"""Subscriptions and fan-out: which connection watches which topic, and getting every frame
of a topic to each of them exactly once and in seq order.

A subscription is either *live* (it has had every frame of its topic up to the last one
the hub delivered, so the next live frame is exactly the next one it needs), *waiting*
(it resumed ahead of this gateway, which is still behind another one; it turns live when
the hub reaches it) or *catching up* (a task reads the frames it has not had from the feed,
bounded by the hub's tail, until it has reached the topic's last seq; then, without
yielding to the event loop, it turns live). Live frames are written only to live
subscriptions, so nothing is sent twice and nothing is skipped, however the backfill and
the live tail interleave.

Each live frame is encoded and framed once per topic, and the same bytes are written to
every live subscriber's socket; frames of one topic in one tailer batch go out as one
write. A connection whose unsent bytes pass its limit is dropped from every topic at once
and closed with 4429: it cannot make the others wait or the process grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine
from typing import Any, Final

import psycopg
import structlog
from prometheus_client import Counter
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from events.envelope import Position
from infra.auth import Principal
from read_api.gateway import metrics, protocol
from read_api.gateway.access import Access, Topic
from read_api.gateway.feed import FeedFrame, FeedReader

log = structlog.get_logger(__name__)

# Frames after which a subscriber's right to the topic is asked again.
_MEMBERSHIP: Final = frozenset({"member.left", "channel.deleted"})
_EMPTY_READS: Final = 40  # a backfill that finds nothing this often gives up (50 ms apart)
DEFAULT_QUEUE_BYTES: Final = 512 * 1024


class Client:
    """One authenticated connection, as the hub sees it."""

    __slots__ = (
        "expires_at",
        "hub",
        "limit",
        "pinged_at",
        "pong",
        "principal",
        "slow",
        "subs",
        "token",
        "transport",
        "ws",
    )

    def __init__(
        self, hub: Hub, ws: ServerConnection, principal: Principal, token: str, expires_at: int
    ) -> None:
        self.hub = hub
        self.ws = ws
        self.transport = ws.transport
        self.principal = principal
        self.token = token
        self.expires_at = expires_at
        self.limit = hub.queue_bytes
        self.subs: dict[str, Subscription] = {}
        self.slow = False
        # Keepalive (connection.keepalive): when the last ping went, and its answer.
        self.pinged_at = time.monotonic() - random.uniform(0, 5)  # spread the first ones
        self.pong: asyncio.Future[float] | None = None

    @property
    def user_id(self) -> str:
        return self.principal.user_id

    def push(self, data: bytes) -> None:
        """Write complete WebSocket frames now, without waiting: the live path. A client
        whose unsent bytes pass its limit is handed to the hub to be closed with 4429."""
        if self.slow or self.ws.protocol.state is not State.OPEN:
            return
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > self.limit:
            self.slow = True
            self.hub.too_slow(self)

    async def send(self, payload: bytes, counted: Counter) -> None:
        """Send one frame's JSON, waiting while the socket's buffer is full: replies and
        backfills, which then go no faster than the client reads. `counted`: the frame's
        type's series (metrics)."""
        await self.ws.send(payload, text=True)
        counted.inc()


class Subscription:
    """One client's interest in one topic."""

    __slots__ = ("active", "client", "next_seq", "task", "topic")

    def __init__(self, client: Client, topic: TopicState) -> None:
        self.client = client
        self.topic = topic
        self.next_seq = 0  # the seq of the next frame this subscriber needs
        self.active = True
        self.task: asyncio.Task[None] | None = None


class TopicState:
    """A topic somebody on this gateway watches."""

    __slots__ = ("last_seq", "live", "name", "subs", "topic", "waiting")

    def __init__(self, topic: Topic) -> None:
        self.topic = topic
        self.name = topic.name
        # The seq of the topic's last frame at the hub's tail; None until first known.
        self.last_seq: int | None = None
        self.subs: dict[Client, Subscription] = {}
        self.live: set[Client] = set()
        self.waiting: set[Subscription] = set()


class Hub:
    """Every topic watched through this gateway, and delivery to their subscribers."""

    def __init__(
        self,
        reader: FeedReader,
        access: Access,
        tail: Position,
        *,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
    ) -> None:
        self.reader = reader
        self.access = access
        self.tail = tail  # every frame at or before it has been delivered
        self.queue_bytes = queue_bytes
        self.topics: dict[str, TopicState] = {}
        self._slow: list[Client] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._advanced = asyncio.Event()  # replaced (after being set) at every delivery

    # -- subscribing ---------------------------------------------------------------------

    async def subscribe(self, client: Client, topic: Topic, after_seq: int | None) -> None:
        """Subscribe (again: a second subscribe restarts the first) and answer `subscribed`
        with the topic's current seq; then send what the client has not had (after
        `after_seq`, when given) and carry on live."""
        self.unsubscribe(client, topic.name)
        state = self.topics.get(topic.name)
        if state is None:
            state = self.topics[topic.name] = TopicState(topic)
        sub = Subscription(client, state)
        state.subs[client] = sub
        client.subs[topic.name] = sub
        metrics.SUBSCRIPTIONS.inc()
        try:
            if state.last_seq is None:
                found = await self.reader.last_seq(topic.name, self.tail)
                # A frame delivered meanwhile has set a later seq: that one is the truth.
                state.last_seq = max(state.last_seq or 0, found)
            if not sub.active:
                return
            current = state.last_seq
            sub.next_seq = current + 1 if after_seq is None else after_seq + 1
            subscribed = protocol.Subscribed(topic=topic.name, seq=current)
            await client.send(protocol.encode(subscribed), metrics.SUBSCRIBED_FRAMES)
            await self._catch_up(sub)
        except BaseException:
            self._remove(sub)
            raise

    def unsubscribe(self, client: Client, name: str) -> bool:
        """Stop sending `name` to `client`; False when it was not subscribed."""
        sub = client.subs.get(name)
        if sub is None:
            return False
        self._remove(sub)
        return True

    def remove_client(self, client: Client) -> None:
        """The connection is gone: forget all its subscriptions."""
        for sub in list(client.subs.values()):
            self._remove(sub)

    def _remove(self, sub: Subscription) -> None:
        if not sub.active:
            return
        sub.active = False
        metrics.SUBSCRIPTIONS.dec()
        state, client = sub.topic, sub.client
        if client.subs.get(state.name) is sub:
            del client.subs[state.name]
        if state.subs.get(client) is sub:
            del state.subs[client]
            state.live.discard(client)
        state.waiting.discard(sub)
        if sub.task is not None and sub.task is not asyncio.current_task():
            sub.task.cancel()
        if not state.subs and self.topics.get(state.name) is state:
            del self.topics[state.name]

    def _end(self, sub: Subscription, code: str, message: str) -> None:
        """Drop a subscription the client did not ask to drop, and tell it why."""
        if not sub.active:
            return
        self._remove(sub)
        sub.client.push(protocol.wire(protocol.error(code, message, sub.topic.name)))
        metrics.ERROR_FRAMES.inc()

    # -- catching up ---------------------------------------------------------------------

    async def _catch_up(self, sub: Subscription, *, recheck: bool = False) -> None:
        """Send `sub` the frames from its next_seq up to the topic's last, from the feed;
        then make it live. With `recheck`, first ask whether it may still watch."""
        state, client = sub.topic, sub.client
        if recheck and not await self._still_allowed(sub):
            return
        empty = 0
        while sub.active:
            last = state.last_seq or 0
            if sub.next_seq > last:
                # No await since `last` was read: the next live frame is the one it needs.
                if sub.next_seq == last + 1:
                    state.live.add(client)
                else:
                    state.waiting.add(sub)  # it has seen more than this gateway has
                return
            frames = await self.reader.topic_frames(state.name, sub.next_seq, self.tail)
            if not frames:
                empty += 1
                if empty > _EMPTY_READS:
                    log.error("backfill finds no frames", topic=state.name, seq=sub.next_seq)
                    self._end(sub, "unavailable", "this topic cannot be resumed; subscribe again")
                    return
                await asyncio.sleep(0.05)
                continue
            for frame in frames:
                if not sub.active:
                    return
                await client.send(frame.payload(), metrics.EVENT_FRAMES)
                sub.next_seq = frame.seq + 1
                if self._concerns(frame, client) and not await self._still_allowed(sub):
                    return

    async def _still_allowed(self, sub: Subscription) -> bool:
        verdict = await self.access.verdict(sub.client.principal, sub.topic.topic)
        if verdict != "ok" and sub.active:
            self._end(sub, "forbidden", "you may no longer watch this topic")
        return verdict == "ok" and sub.active

    @staticmethod
    def _concerns(frame: FeedFrame, client: Client) -> bool:
        """Whether the frame may have taken the client's right to its topic away."""
        if frame.name not in _MEMBERSHIP:
            return False
        return frame.name == "channel.deleted" or frame.view().get("user_id") == client.user_id

    def _spawn(self, sub: Subscription, coro: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except ConnectionClosed:
                self._remove(sub)
            except psycopg.Error as e:
                log.warning("catching up failed", topic=sub.topic.name, error=str(e))
                self._end(sub, "unavailable", "the topic could not be read; subscribe again")

        task = asyncio.create_task(guarded())
        sub.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _suspend(self, sub: Subscription, *, recheck: bool) -> None:
        """Take a live (or waiting) subscription off the live path and let a task catch it
        up from the feed, asking first whether it may still watch when `recheck`."""
        state = sub.topic
        if sub.client in state.live and state.subs.get(sub.client) is sub:
            state.live.discard(sub.client)
            sub.next_seq = (state.last_seq or 0) + 1
        elif sub in state.waiting:
            state.waiting.discard(sub)
        else:
            return  # already catching up: its task reads the same frames
        self._spawn(sub, self._catch_up(sub, recheck=recheck))

    # -- the live path -------------------------------------------------------------------

    def deliver(self, frames: list[FeedFrame], reached: Position) -> None:
        """The tailer's batch (in log order), reaching `reached`: send each watched topic's
        frames to its live subscribers."""
        # Asked once a batch: a debug line per frame costs microseconds even when dropped.
        debug = log.is_enabled_for(logging.DEBUG)
        by_topic: dict[TopicState, list[FeedFrame]] = {}
        topics = self.topics
        for frame in frames:
            state = topics.get(frame.topic)
            if state is not None:
                by_topic.setdefault(state, []).append(frame)
        self.tail = reached
        for state, batch in by_topic.items():
            self._deliver(state, batch, debug)
        self._close_slow()
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    async def reach(self, position: Position, seconds: float) -> bool:
        """Wait until the tail has delivered `position`; False when `seconds` pass first."""
        try:
            async with asyncio.timeout(seconds):
                while self.tail < position:
                    await self._advanced.wait()
        except TimeoutError:
            return False
        return True

    def _deliver(self, state: TopicState, frames: list[FeedFrame], debug: bool) -> None:
        chunk: list[bytes] = []
        for frame in frames:
            last = state.last_seq
            if last is not None:
                if frame.seq <= last:
                    continue
                if frame.seq != last + 1:
                    # Frames this hub never saw (cannot happen while the feed numbers each
                    # topic 1, 2, 3, ... in log order): everyone catches up from the feed.
                    log.warning("feed gap", topic=state.name, expected=last + 1, got=frame.seq)
                    self._flush(state, chunk)
                    chunk = []
                    for sub in [*state.waiting, *(state.subs[c] for c in state.live)]:
                        self._suspend(sub, recheck=False)
            state.last_seq = frame.seq
            if state.waiting:
                self._flush(state, chunk)
                chunk = []
                for sub in [s for s in state.waiting if s.next_seq == frame.seq]:
                    state.waiting.discard(sub)
                    state.live.add(sub.client)
            if state.live:
                chunk.append(frame.wire())
                if debug:
                    log.debug("frame delivered", topic=frame.topic, seq=frame.seq,
                              event_id=frame.event_id, traceparent=frame.traceparent,
                              connections=len(state.live))  # fmt: skip
            if frame.name in _MEMBERSHIP:
                self._flush(state, chunk)
                chunk = []
                self._membership_changed(state, frame)
        self._flush(state, chunk)

    def _flush(self, state: TopicState, chunk: list[bytes]) -> None:
        if not chunk or not state.live:
            return
        data = chunk[0] if len(chunk) == 1 else b"".join(chunk)
        for client in state.live:
            client.push(data)
        sent = len(chunk) * len(state.live)
        metrics.DELIVERIES.inc(sent)
        metrics.EVENT_FRAMES.inc(sent)

    def _membership_changed(self, state: TopicState, frame: FeedFrame) -> None:
        """After `member.left` the leaver's subscriptions are asked again before any later
        frame of the channel; after `channel.deleted` nobody may watch it any more."""
        if frame.name == "channel.deleted":
            for sub in list(state.subs.values()):
                self._end(sub, "forbidden", "the channel was deleted")
            return
        user_id = frame.view().get("user_id")
        for client, sub in list(state.subs.items()):
            if client.user_id == user_id:
                self._suspend(sub, recheck=True)

    def push_to_topic(
        self, name: str, data: bytes, counted: Counter, *, skip_user: str | None = None
    ) -> None:
        """Write a frame's wire bytes (typing, presence) to the topic's live subscribers;
        `counted`: the frame's type's series."""
        state = self.topics.get(name)
        if state is None:
            return
        sent = 0
        for client in state.live:
            if client.user_id != skip_user:
                client.push(data)
                sent += 1
        counted.inc(sent)
        self._close_slow()

    # -- slow clients --------------------------------------------------------------------

    def too_slow(self, client: Client) -> None:
        """`client` passed its limit: it is closed (4429) once the current delivery ends."""
        self._slow.append(client)

    def _close_slow(self) -> None:
        if not self._slow:
            return
        slow, self._slow = self._slow, []
        for client in slow:
            self.remove_client(client)
            metrics.SLOW_CLOSES.inc()
            log.info("closing a client that does not keep up", user_id=client.user_id,
                     unsent=client.transport.get_write_buffer_size())  # fmt: skip
            self.run_soon(client.ws.close(protocol.TOO_SLOW, "too slow: frames were not read"))

    def run_soon(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` in the background, kept until it ends."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel the background work (catch-ups, closes)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
