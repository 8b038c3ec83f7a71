"""NATS and JetStream plumbing: connecting, and the event stream of CONTRACT.md."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import (
    DEFAULT_PREFIX,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from infra.settings import Settings

log = structlog.get_logger(__name__)

# JetStream drops a message whose Nats-Msg-Id it saw within this window: a relay that
# restarts between publishing and checkpointing republishes, and the copies vanish here.
DUPLICATE_WINDOW_S = 300.0


async def connect(url: str, *, name: str, initial_timeout: float = 5.0, **options: Any) -> NATS:
    """Connect, then reconnect forever: NATS is the fast road, and its absence is survivable.

    The first connection has a deadline (TimeoutError): nats-py would otherwise retry a
    server that is down for ever, and the caller could not fall back on PostgreSQL.
    """

    async def on_error(e: Exception) -> None:
        log.warning("nats error", error=str(e))

    async def on_disconnected() -> None:
        if nc.is_closed:  # our own close() (a clean shutdown) reports itself as a disconnect
            log.info("nats connection closed")
        else:
            log.warning("nats disconnected")

    async def on_reconnected() -> None:
        log.info("nats reconnected")

    nc = NATS()
    try:
        await asyncio.wait_for(
            nc.connect(
                url,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,  # type: ignore[arg-type]  # seconds; a float works
                connect_timeout=2,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                **options,
            ),
            initial_timeout,
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await nc.close()
        raise
    return nc


def stream_config(settings: Settings) -> StreamConfig:
    """The JetStream stream every event is published on."""
    return StreamConfig(
        name=settings.nats_stream,
        subjects=[settings.subject_filter],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_age=7 * 24 * 3600.0,
    )


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """Create the event stream, or bring an existing one's configuration up to date."""
    config = stream_config(settings)
    try:
        await js.stream_info(settings.nats_stream)
    except NotFoundError:
        await js.add_stream(config)
        log.info("jetstream stream created", stream=settings.nats_stream)
        return
    await js.update_stream(config)


class PullFeed:
    """The messages of a durable pull consumer, kept flowing by a standing pull request.

    nats-py's `fetch` sends two pull requests a call (a no-wait probe, then a lingering
    one) and waits for each message with a task of its own: at 1,000 events/s, with a
    handful of messages a batch, that costs more than the messages. Here one request of
    `batch` messages stays open on the server; a new one is sent when the open one is
    half used, ends (expired, or the server cut it), or goes silent (no message and no
    heartbeat: NATS lost it). Messages arrive on a callback and wait in a list until
    `next_batch` takes them all.
    """

    def __init__(
        self,
        nc: NATS,
        stream: str,
        consumer: str,
        *,
        batch: int = 500,
        expires_s: float = 30.0,
        heartbeat_s: float = 1.0,
        api_prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self._nc = nc
        self._next_subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._batch = batch
        self._request = json.dumps(
            {"batch": batch, "expires": int(expires_s * 1e9),
             "idle_heartbeat": int(heartbeat_s * 1e9)}
        ).encode()  # fmt: skip
        self._silence_s = 3 * heartbeat_s
        self._sub: Subscription | None = None
        self._msgs: list[Msg] = []
        self._arrived = asyncio.Event()
        self._request_no = 0
        self._owed = 0  # messages the open requests may still deliver
        self._heard = 0.0  # when the server last sent anything on the inbox
        self._ended: str | None = None  # why the server ended the newest request early

    async def start(self) -> None:
        """Subscribe the inbox (the first pull request goes with the first `next_batch`)."""
        self._sub = await self._nc.subscribe(self._inbox + ".*", cb=self._on_message)

    async def stop(self) -> None:
        """Unsubscribe: what the open request still delivers is dropped, then redelivered
        by JetStream to whoever pulls next (nothing was acknowledged)."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def next_batch(self, wait_s: float) -> list[Msg]:
        """Every message that arrived, waiting up to `wait_s` for one; [] when none came.
        NatsError when the server ended the pull request otherwise than by its expiry (the
        consumer was deleted, ...): the caller subscribes afresh."""
        deadline = time.monotonic() + wait_s
        while not self._msgs:
            if self._ended is not None:
                ended, self._ended = self._ended, None
                raise NatsError(f"the pull request ended: {ended}")
            await self._pull_if_needed()
            left = deadline - time.monotonic()
            if self._msgs or left <= 0:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                # Wake at least once a heartbeat period to notice a silent request.
                await asyncio.wait_for(self._arrived.wait(), min(left, self._silence_s))
        msgs, self._msgs = self._msgs, []
        if msgs:
            await self._pull_if_needed()  # asked for before these are applied: no idle gap
        return msgs

    async def _pull_if_needed(self) -> None:
        silent = time.monotonic() - self._heard > self._silence_s
        if self._owed > self._batch // 2 and not silent:
            return
        if silent:
            self._owed = 0  # the open requests are lost
        self._request_no += 1
        self._owed += self._batch
        self._heard = time.monotonic()  # the new request gets its own heartbeat period
        await self._nc.publish(
            self._next_subject, self._request, reply=f"{self._inbox}.{self._request_no}"
        )

    async def _on_message(self, msg: Msg) -> None:
        self._heard = time.monotonic()
        if msg.data or not msg.headers or "Status" not in msg.headers:
            # An event (delivered under its own subject: which request it answers is not
            # said, so the open requests' credit is counted as one).
            self._msgs.append(msg)
            self._owed -= 1
            self._arrived.set()
            return
        status = msg.headers["Status"]
        if status == "100":
            return  # an idle heartbeat: the request is alive
        # The request is over: expired (408) or ended by the server. Its status says how
        # many of its messages it will not deliver (none said: assume all of ours).
        unsent = msg.headers.get("Nats-Pending-Messages")
        self._owed = max(0, self._owed - int(unsent)) if unsent and unsent.isdigit() else 0
        if status != "408" and msg.subject.endswith(f".{self._request_no}"):
            self._ended = f"{status} {msg.headers.get('Description', '')}"
        self._arrived.set()


class _PubAckError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class PubAck(msgspec.Struct):
    """JetStream's answer to one published message."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _PubAckError | None = None


_PUB_ACK = msgspec.json.Decoder(PubAck)


class AckedPublisher:
    """Publishes batches on JetStream and waits for all their acknowledgements at once.

    nats-py's `publish_async` makes a future, a semaphore wait, a token and a JSON parse
    into a dataclass for each message; a relay publishing every event spends more on that
    than on the messages. Here a batch's messages reply to `<inbox>.<batch>.<index>`, and
    one callback counts the acknowledgements (decoded with msgspec) into one future.
    """

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._batch_no = 0
        self._acks: list[PubAck | None] = []
        self._left = 0
        self._done: asyncio.Future[None] | None = None

    async def publish(
        self, messages: Sequence[tuple[str, bytes, dict[str, str]]], timeout_s: float
    ) -> list[PubAck]:
        """Publish (subject, payload, headers) in order; their acknowledgements in the same
        order once JetStream acknowledged every one. NatsError when one was refused,
        TimeoutError when they did not all come within `timeout_s` (publish again: the
        stream drops repeats by Nats-Msg-Id)."""
        if not messages:
            return []
        if self._sub is None:
            self._sub = await self._nc.subscribe(self._inbox + ".*.*", cb=self._on_ack)
        self._batch_no += 1
        prefix = f"{self._inbox}.{self._batch_no}."
        self._acks = [None] * len(messages)
        self._left = len(messages)
        done = self._done = asyncio.get_running_loop().create_future()
        try:
            for i, (subject, payload, headers) in enumerate(messages):
                await self._nc.publish(subject, payload, reply=f"{prefix}{i}", headers=headers)
            await asyncio.wait_for(done, timeout_s)
        finally:
            self._done = None  # late acknowledgements of this batch are dropped
        return [ack for ack in self._acks if ack is not None]

    async def _on_ack(self, msg: Msg) -> None:
        done = self._done
        batch, _, index = msg.subject[len(self._inbox) + 1 :].partition(".")
        if done is None or done.done() or batch != str(self._batch_no):
            return  # a batch given up on: it is published again
        if not msg.data:  # a status: 503 when no stream listens on the subject
            status = (msg.headers or {}).get("Status", "")
            done.set_exception(NatsError(f"no acknowledgement: status {status}"))
            return
        try:
            ack = _PUB_ACK.decode(msg.data)
        except msgspec.DecodeError as e:
            done.set_exception(NatsError(f"unreadable acknowledgement: {e}"))
            return
        if ack.error is not None:
            done.set_exception(NatsError(f"published message refused: {ack.error.description}"))
            return
        i = int(index)
        if self._acks[i] is None:
            self._acks[i] = ack
            self._left -= 1
            if self._left == 0:
                done.set_result(None)
