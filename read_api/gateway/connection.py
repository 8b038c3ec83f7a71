"""One WebSocket connection: the auth frame, then the client's ops until it goes.

The first frame must be `auth` within 5 s (4408 otherwise); a bad token closes with 4401,
and so does the token's expiry or its session's revocation (the server's sweep watches
both) unless a new `auth` frame renews it first. Bad frames get an error frame and the
connection carries on; nothing a client sends can end anyone else's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Final, assert_never

import psycopg
import structlog
from prometheus_client import Counter
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from events.envelope import Position
from infra.auth import Principal
from infra.tokens import InvalidToken, Tokens
from read_api.freshness import DEFAULT_WAIT_S
from read_api.gateway import metrics, protocol
from read_api.gateway.access import Access, parse_topic
from read_api.gateway.acks import Acks
from read_api.gateway.hub import Client, Hub
from read_api.gateway.presence import Presence
from read_api.gateway.protocol import Ack, Auth, Ping, Subscribe, Typing, Unsubscribe

log = structlog.get_logger(__name__)

MAX_SUBSCRIPTIONS: Final = 1000
TYPING_EVERY_S: Final = 1.0  # a client's typing in one channel is passed on at most this often


@dataclass
class Parts:
    """What a connection works with: one set per gateway process."""

    tokens: Tokens
    revoked: Container[str]
    access: Access
    hub: Hub
    presence: Presence
    acks: Acks
    clients: set[Client] = field(default_factory=set)

    def authenticate(self, token: str) -> tuple[Principal, int] | None:
        """The token's bearer and its expiry; None when it is not (or no longer) good."""
        try:
            claims = self.tokens.verify(token)
        except InvalidToken:
            return None
        if claims.expires_at <= time.time() or claims.session_id in self.revoked:
            return None
        return Principal(claims.user_id, claims.session_id, claims.roles), claims.expires_at


async def serve(ws: ServerConnection, parts: Parts) -> None:
    """The connection handler: authenticate, then follow the client's ops; then count the
    connection's end by its close code."""
    try:
        await _serve(ws, parts)
    except Exception:
        # websockets closes with 1011 once the handler has raised: close first, to count it.
        await ws.close(CloseCode.INTERNAL_ERROR)
        raise
    finally:
        metrics.closed(ws)


async def _serve(ws: ServerConnection, parts: Parts) -> None:
    try:
        first = await asyncio.wait_for(ws.recv(), protocol.AUTH_TIMEOUT_S)
    except TimeoutError:
        await ws.close(protocol.AUTH_TIMEOUT, "no auth frame within 5 s")
        return
    except ConnectionClosed:
        return
    op: protocol.Op | None
    try:
        op = protocol.parse(first)
        metrics.received(op)
    except protocol.BadFrame:
        metrics.INVALID_OPS.inc()
        op = None
    if not isinstance(op, Auth):
        await ws.close(protocol.UNAUTHORIZED, "the first frame must be auth")
        return
    found = parts.authenticate(op.token)
    if found is None:
        await ws.close(protocol.UNAUTHORIZED, "the access token is not valid")
        return
    principal, expires_at = found
    client = Client(parts.hub, ws, principal, op.token, expires_at)
    parts.clients.add(client)
    parts.presence.connected(client.user_id)
    metrics.CONNECTIONS.inc()
    try:
        session = _Session(parts, client)
        await session.authenticated()
        async for raw in ws:
            await session.handle(raw)
    except ConnectionClosed:
        pass
    finally:
        metrics.CONNECTIONS.dec()
        parts.clients.discard(client)
        parts.hub.remove_client(client)
        parts.presence.disconnected(client.user_id)


class _Session:
    """A signed-in connection's ops."""

    def __init__(self, parts: Parts, client: Client) -> None:
        self.parts = parts
        self.client = client
        self.typed: dict[str, float] = {}

    async def reply(self, payload: bytes, counted: Counter) -> None:
        """Send a frame's JSON, waiting while the client reads slower than that; `counted`:
        the frame's type's series."""
        await self.client.send(payload, counted)

    async def error(self, code: str, message: str, topic: str | None = None) -> None:
        """Send an error frame."""
        await self.reply(protocol.error(code, message, topic), metrics.ERROR_FRAMES)

    async def authenticated(self) -> None:
        """Say whose the connection is, and until when its token holds."""
        frame = protocol.Authenticated(user_id=self.client.user_id,
                                       expires_at=self.client.expires_at)  # fmt: skip
        await self.reply(protocol.encode(frame), metrics.AUTHENTICATED_FRAMES)

    async def handle(self, raw: str | bytes) -> None:
        """Carry out one client frame; whatever goes wrong, answer with an error frame."""
        try:
            op = protocol.parse(raw)
        except protocol.BadFrame as e:
            metrics.INVALID_OPS.inc()
            await self.error(e.code, e.message)
            return
        metrics.received(op)
        try:
            match op:
                case Auth():
                    await self.renew(op)
                case Subscribe():
                    await self.subscribe(op)
                case Unsubscribe():
                    await self.unsubscribe(op)
                case Typing():
                    await self.typing(op)
                case Ping():
                    await self.reply(protocol.PONG, metrics.PONG_FRAMES)
                case Ack():
                    await self.ack(op)
                case _:
                    assert_never(op)
        except psycopg.Error as e:
            log.warning("gateway op failed on the database", error=str(e))
            await self.error("unavailable", "try again shortly")

    async def renew(self, op: Auth) -> None:
        """A fresh token for the same user keeps the connection open past the old one's
        expiry; any other token ends it."""
        found = self.parts.authenticate(op.token)
        if found is None or found[0].user_id != self.client.user_id:
            await self.client.ws.close(protocol.UNAUTHORIZED, "the access token is not valid")
            return
        self.client.principal, self.client.expires_at = found
        self.client.token = op.token
        await self.authenticated()

    async def subscribe(self, op: Subscribe) -> None:
        """Check the topic with the authorization layer, then hand it to the hub."""
        topic = parse_topic(op.topic, self.client.principal)
        if topic is None:
            await self.error("invalid_topic", "topics are channel:<id>, auction:<id> or me",
                             op.topic[:100])  # fmt: skip
            return
        if topic.name not in self.client.subs and len(self.client.subs) >= MAX_SUBSCRIPTIONS:
            await self.error("too_many_subscriptions",
                             f"at most {MAX_SUBSCRIPTIONS} topics per connection", op.topic)  # fmt: skip
            return
        if op.min_position is not None:
            try:
                wanted = Position.parse(op.min_position)
            except ValueError:
                await self.error(
                    "invalid_position", "min_position is not a position token", op.topic
                )
                return
            if not await self.parts.hub.reach(wanted, DEFAULT_WAIT_S):
                await self.error("not_yet_consistent",
                                 "the read models have not caught up with min_position yet", op.topic)  # fmt: skip
                return
        verdict = await self.parts.access.verdict(self.client.principal, topic)
        if verdict == "not_found":
            await self.error("not_found", "there is no such topic", op.topic)
        elif verdict != "ok":
            await self.error("forbidden", "you may not watch this topic", op.topic)
        else:
            await self.parts.hub.subscribe(self.client, topic, op.after_seq)
            if topic.kind == "channel" and topic.name in self.client.subs:
                await self.present(topic.id)

    async def present(self, channel_id: str) -> None:
        """Who is online in a channel just subscribed to: then changes only."""
        for user_id in await self.parts.presence.online_members(channel_id):
            frame = protocol.Presence(channel_id=channel_id, user_id=user_id, status="online")
            await self.reply(protocol.encode(frame), metrics.PRESENCE_FRAMES)

    async def unsubscribe(self, op: Unsubscribe) -> None:
        """Stop a topic (answered even when it was not subscribed)."""
        topic = parse_topic(op.topic, self.client.principal)
        if topic is None:
            await self.error("invalid_topic", "topics are channel:<id>, auction:<id> or me",
                             op.topic[:100])  # fmt: skip
            return
        self.parts.hub.unsubscribe(self.client, topic.name)
        unsubscribed = protocol.Unsubscribed(topic=topic.name)
        await self.reply(protocol.encode(unsubscribed), metrics.UNSUBSCRIBED_FRAMES)

    async def typing(self, op: Typing) -> None:
        """Pass a member's typing on to every gateway, at most once a second a channel."""
        channel_id = protocol.parse_id(op.channel_id)
        if channel_id is None:
            await self.error("invalid_frame", "channel_id is not an id")
            return
        now = time.monotonic()
        if now - self.typed.get(channel_id, -TYPING_EVERY_S) < TYPING_EVERY_S:
            return  # said a moment ago: the indicator is still showing
        if not await self.parts.access.may_type(self.client.principal, channel_id):
            await self.error("forbidden", "only members may type in a channel")
            return
        if len(self.typed) > 100:
            self.typed.clear()
        self.typed[channel_id] = now
        await self.parts.presence.typing(channel_id, self.client.user_id)

    async def ack(self, op: Ack) -> None:
        """Record delivery through the write API; refusals come back as error frames."""
        channel_id, message_id = protocol.parse_id(op.channel_id), protocol.parse_id(op.message_id)
        if channel_id is None or message_id is None:
            await self.error("invalid_frame", "channel_id and message_id must be ids")
            return
        refused = self.parts.acks.record(self.client, channel_id, message_id)
        if refused is not None:
            await self.reply(refused, metrics.ERROR_FRAMES)


async def keepalive(parts: Parts, interval_s: float) -> None:
    """Ping each client every `interval_s`; one that has not answered the last ping by then
    is gone (its socket is dropped). One loop for all: a task per connection would cost
    more memory than the connection's own state."""
    while True:
        await asyncio.sleep(min(1.0, interval_s / 2))
        now = time.monotonic()
        for client in list(parts.clients):
            if now - client.pinged_at < interval_s:
                continue
            if client.pong is not None and not client.pong.done():
                log.info("a client stopped answering pings", user_id=client.user_id)
                client.transport.abort()
                continue
            if client.transport.get_write_buffer_size() > client.limit // 2:
                continue  # busy sending: the 4429 check watches it
            client.pinged_at = now
            with contextlib.suppress(ConnectionClosed):
                client.pong = asyncio.ensure_future(await client.ws.ping())  # the pong waiter


def sweep(parts: Parts) -> None:
    """Close connections whose token has expired or whose session was revoked (4401)."""
    now = time.time()
    for client in list(parts.clients):
        if client.expires_at <= now or client.principal.session_id in parts.revoked:
            parts.clients.discard(client)
            parts.hub.remove_client(client)
            reason = "the access token expired" if client.expires_at <= now else "the session ended"
            parts.hub.run_soon(client.ws.close(protocol.UNAUTHORIZED, reason))
