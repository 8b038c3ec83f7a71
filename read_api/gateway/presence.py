"""Presence and typing, on NATS core subjects shared by every gateway (never the event store).

Presence: a user is online while some gateway holds an authenticated connection of theirs.
Each gateway publishes its users going online and offline as it sees them, and every
`beat_s` the whole list of its online users (a heartbeat). Every gateway keeps what each
other one last said; one not heard from for `expiry_s` is presumed dead and its users go
offline with it. A heartbeat replaces what was known of its gateway, so a lost NATS message
is mended by the next one. Whenever a user's status changes in this view, the gateway tells
its own subscribers of the user's channels (small channels only: in a channel of thousands,
everyone's comings and goings would cost far more than they are worth).

Typing: a member's `typing` goes to every gateway, which passes it to its own subscribers
of the channel (but not to the typist).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Final

import msgspec
import psycopg
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.errors import Error as NatsError
from psycopg_pool import AsyncConnectionPool

from read_api.gateway import metrics, protocol
from read_api.gateway.hub import Hub

log = structlog.get_logger(__name__)

BEAT_S: Final = 1.0
EXPIRY_S: Final = 4.0
PRESENCE_MAX_MEMBERS: Final = 500  # larger channels get no presence frames
_BEAT_CHUNK: Final = 2000  # users per heartbeat message (about 80 KB)
_FLUSH_S: Final = 0.05  # changes are gathered this long, then published and delivered

_MEMBERS = (
    "SELECT m.user_id::text FROM rm_channels.members m"
    " JOIN rm_channels.channels c ON c.channel_id = m.channel_id"
    " WHERE m.channel_id = %s AND NOT c.deleted AND c.member_count <= %s"
)
_CHANNELS_OF = (
    "SELECT m.user_id::text, m.channel_id::text FROM rm_channels.members m"
    " JOIN rm_channels.channels c ON c.channel_id = m.channel_id"
    " WHERE m.user_id = ANY(%s::uuid[]) AND NOT c.deleted AND c.member_count <= %s"
)


class News(msgspec.Struct, omit_defaults=True):
    """What one gateway tells the others about its users."""

    gateway: str
    online: list[str] = []
    offline: list[str] = []
    beat: int = 0  # > 0: this is part `part` of `parts` of heartbeat number `beat`
    part: int = 0
    parts: int = 0
    bye: bool = False  # the gateway is shutting down: all its users are gone


class TypingNews(msgspec.Struct):
    channel_id: str
    user_id: str


_NEWS = msgspec.json.Decoder(News)
_TYPING = msgspec.json.Decoder(TypingNews)
_ENCODER = msgspec.json.Encoder()


@dataclass
class _Remote:
    """What another gateway last said about its users."""

    users: set[str] = field(default_factory=set)
    seen: float = 0.0
    beat: int = 0
    parts: set[int] = field(default_factory=set)
    building: set[str] = field(default_factory=set)


class Presence:
    """This gateway's share of presence and typing."""

    def __init__(
        self,
        nc: NATS,
        presence_subject: str,
        typing_subject: str,
        pool: AsyncConnectionPool,
        hub: Hub,
        *,
        beat_s: float = BEAT_S,
        expiry_s: float = EXPIRY_S,
    ) -> None:
        self.nc = nc
        self.subject = presence_subject
        self.typing_subject = typing_subject
        self.pool = pool
        self.hub = hub
        self.beat_s = beat_s
        self.expiry_s = expiry_s
        self.gateway_id = uuid.uuid4().hex
        self.local: dict[str, int] = {}  # user -> connections on this gateway
        self.remote: dict[str, _Remote] = {}
        self.online: set[str] = set()  # who this gateway has last said is online
        self._went_online: set[str] = set()
        self._went_offline: set[str] = set()
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._beat = 0
        self._subs: list[NatsSubscription] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Listen to the other gateways; start publishing this one's news and heartbeats."""
        self._subs = [
            await self.nc.subscribe(self.subject, cb=self._on_news),
            await self.nc.subscribe(self.typing_subject, cb=self._on_typing),
        ]
        self._tasks = [asyncio.create_task(self._flusher()), asyncio.create_task(self._beater())]

    async def close(self) -> None:
        """Say goodbye (the others drop this gateway's users at once) and stop."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in self._subs:
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()
        with contextlib.suppress(NatsError, OSError):
            await self.nc.publish(self.subject, _ENCODER.encode(News(self.gateway_id, bye=True)))
            await self.nc.flush(timeout=1)

    # -- this gateway's connections ------------------------------------------------------

    def connected(self, user_id: str) -> None:
        """A connection of `user_id` signed in here."""
        count = self.local.get(user_id, 0)
        self.local[user_id] = count + 1
        if count == 0:
            self._went_offline.discard(user_id)
            self._went_online.add(user_id)
            self._changed(user_id)

    def disconnected(self, user_id: str) -> None:
        """A connection of `user_id` here has gone."""
        count = self.local.get(user_id, 0)
        if count > 1:
            self.local[user_id] = count - 1
            return
        self.local.pop(user_id, None)
        self._went_online.discard(user_id)
        self._went_offline.add(user_id)
        self._changed(user_id)

    def is_online(self, user_id: str) -> bool:
        """Online anywhere, as far as this gateway knows."""
        if user_id in self.local:
            return True
        return any(user_id in remote.users for remote in self.remote.values())

    async def online_members(self, channel_id: str) -> list[str]:
        """Who of the channel's members is online now, as this gateway has told its
        clients (small channels only; later changes follow as presence frames)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_MEMBERS, (channel_id, PRESENCE_MAX_MEMBERS))
            members = [row[0] for row in await cur.fetchall()]
        return [user for user in members if user in self.online]

    def _changed(self, user_id: str) -> None:
        self._dirty.add(user_id)
        self._wake.set()

    # -- what the others say -------------------------------------------------------------

    async def _on_news(self, msg: Msg) -> None:
        try:
            news = _NEWS.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("undecodable presence message", subject=msg.subject)
            return
        if news.gateway == self.gateway_id:
            return
        if news.bye:
            gone = self.remote.pop(news.gateway, None)
            for user in gone.users if gone else ():
                self._changed(user)
            return
        remote = self.remote.setdefault(news.gateway, _Remote())
        remote.seen = time.monotonic()
        if not news.beat:
            for user in news.online:
                remote.users.add(user)
                remote.building.add(user)  # a heartbeat being assembled must not undo it
                self._changed(user)
            for user in news.offline:
                remote.users.discard(user)
                remote.building.discard(user)
                self._changed(user)
            return
        if news.beat != remote.beat:
            remote.beat, remote.parts, remote.building = news.beat, set(), set()
        remote.parts.add(news.part)
        remote.building.update(news.online)
        if len(remote.parts) == news.parts:
            # The whole list: whatever it lacks is gone, whatever it adds has come.
            for user in remote.users ^ remote.building:
                self._changed(user)
            remote.users, remote.building, remote.parts = remote.building, set(), set()

    async def _on_typing(self, msg: Msg) -> None:
        try:
            news = _TYPING.decode(msg.data)
        except msgspec.DecodeError:
            return
        frame = protocol.TypingFrame(channel_id=news.channel_id, user_id=news.user_id)
        self.hub.push_to_topic(f"channel:{news.channel_id}", protocol.wire(protocol.encode(frame)),
                               metrics.TYPING_FRAMES, skip_user=news.user_id)  # fmt: skip

    async def typing(self, channel_id: str, user_id: str) -> None:
        """Tell every gateway (this one too) that `user_id` is typing in the channel."""
        await self.nc.publish(self.typing_subject,
                              _ENCODER.encode(TypingNews(channel_id, user_id)))  # fmt: skip

    # -- publishing and delivering -------------------------------------------------------

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(_FLUSH_S)  # gather a burst of connections into one round
            self._wake.clear()
            try:
                await self._flush()
            except (NatsError, OSError, psycopg.Error) as e:
                log.warning("presence round failed", error=str(e))

    async def _flush(self) -> None:
        online, offline = sorted(self._went_online), sorted(self._went_offline)
        self._went_online.clear()
        self._went_offline.clear()
        for start in range(0, max(len(online), len(offline)), _BEAT_CHUNK):
            news = News(self.gateway_id, online=online[start : start + _BEAT_CHUNK],
                        offline=offline[start : start + _BEAT_CHUNK])  # fmt: skip
            await self.nc.publish(self.subject, _ENCODER.encode(news))
        dirty, self._dirty = self._dirty, set()
        changes: dict[str, str] = {}
        for user in dirty:
            now = self.is_online(user)
            if now != (user in self.online):
                changes[user] = "online" if now else "offline"
                (self.online.add if now else self.online.discard)(user)
        if changes:
            await self._deliver(changes)

    async def _deliver(self, changes: dict[str, str]) -> None:
        """Presence frames to this gateway's subscribers of the changed users' channels."""
        if not any(name.startswith("channel:") for name in self.hub.topics):
            return
        async with self.pool.connection() as conn:
            cur = await conn.execute(_CHANNELS_OF, (list(changes), PRESENCE_MAX_MEMBERS))
            rows = await cur.fetchall()
        for user_id, channel_id in rows:
            frame = protocol.Presence(channel_id=channel_id, user_id=user_id,
                                      status=changes[user_id])  # type: ignore[arg-type]  # fmt: skip
            self.hub.push_to_topic(f"channel:{channel_id}", protocol.wire(protocol.encode(frame)),
                                   metrics.PRESENCE_FRAMES)  # fmt: skip

    async def _beater(self) -> None:
        while True:
            await asyncio.sleep(self.beat_s)
            try:
                await self._heartbeat()
            except (NatsError, OSError) as e:
                log.warning("presence heartbeat failed", error=str(e))
            self._expire()

    async def _heartbeat(self) -> None:
        self._beat += 1
        users = sorted(self.local)
        parts = max(1, -(-len(users) // _BEAT_CHUNK))
        for part in range(parts):
            chunk = users[part * _BEAT_CHUNK : (part + 1) * _BEAT_CHUNK]
            news = News(self.gateway_id, online=chunk, beat=self._beat, part=part, parts=parts)
            await self.nc.publish(self.subject, _ENCODER.encode(news))

    def _expire(self) -> None:
        deadline = time.monotonic() - self.expiry_s
        for gateway, remote in list(self.remote.items()):
            if remote.seen < deadline:
                log.info("a gateway went quiet; its users are offline", gateway=gateway)
                del self.remote[gateway]
                for user in remote.users:
                    self._changed(user)
