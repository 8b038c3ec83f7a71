"""`hubbub gateway`: the WebSocket gateway process, and its bootstrap (the one place that
builds the gateway's parts from the settings).

`/v1/ws` is the WebSocket; the same port answers `GET /health/live`, `/health/ready` and
`/metrics` as plain HTTP. Several gateways may run side by side: each tails the feed and
delivers to its own clients; presence and typing cross between them on NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

import psycopg
import structlog
from nats.aio.client import Client as NATS
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from psycopg_pool import AsyncConnectionPool
from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Origin

from infra.db import make_pool
from infra.nats import connect
from infra.relay import stop_on_signals
from infra.settings import Settings
from infra.tokens import Tokens
from projections.feed import FRAMES_CHANNEL
from projections.registry import ensure_all
from projections.sessions import RevokedSessions
from read_api.freshness import Freshness
from read_api.gateway import connection, protocol
from read_api.gateway.access import Access
from read_api.gateway.acks import Acks
from read_api.gateway.feed import SOURCES, FeedReader, Tailer
from read_api.gateway.hub import DEFAULT_QUEUE_BYTES, Hub
from read_api.gateway.presence import BEAT_S, EXPIRY_S, Presence

log = structlog.get_logger(__name__)

PATH: Final = "/v1/ws"
SWEEP_S: Final = 0.5  # how often token expiry and session revocation are checked
PING_S: Final = 20.0  # keepalive pings; a peer that has not answered by the next is dropped
CLOSE_TIMEOUT_S: Final = 5.0
# The kernel's send buffer per connection (it doubles it). Left alone, Linux grows it to
# 4 MiB for a client that stops reading, before a byte waits in our own queue: fixing it
# keeps what one connection may hold bounded, and a stalled client noticed early.
SEND_BUFFER: Final = 128 * 1024


@dataclass(frozen=True, kw_only=True)
class Options:
    """What tests and benchmarks may change; the defaults are production's."""

    host: str | None = None  # None: settings.host
    port: int | None = None  # None: settings.gateway_port; 0: any free port
    write_api_url: str | None = None  # None: http://{settings.host}:{settings.write_api_port}
    queue_bytes: int = DEFAULT_QUEUE_BYTES
    send_buffer: int = SEND_BUFFER
    beat_s: float = BEAT_S
    expiry_s: float = EXPIRY_S
    ping_s: float = PING_S


@dataclass
class Gateway:
    """A running gateway: its server and parts."""

    server: Server
    parts: connection.Parts
    port: int
    tasks: list[asyncio.Task[None]]  # the tail, sweeps, keepalive: none should ever end

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{PATH}"

    async def failed(self) -> BaseException:
        """Wait until one of the gateway's own tasks ends (a bug): its exception."""
        done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        task = next(iter(done))
        return task.exception() or RuntimeError(f"{task.get_name()} ended")


def _json(status: HTTPStatus, body: dict[str, Any]) -> Response:
    headers = Headers([("Content-Type", "application/json"), ("Cache-Control", "no-store")])
    return Response(status.value, status.phrase, headers, json.dumps(body).encode())


def _http(pool: AsyncConnectionPool, nc: NATS) -> Any:
    """process_request: plain HTTP on the gateway's port (health, metrics); None lets the
    WebSocket handshake go on (and the origin check with it)."""

    async def ready() -> Response:
        checks: dict[str, str] = {}
        try:
            async with pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
            checks["postgres"] = "ok"
        except Exception as e:  # a readiness probe reports, never raises
            checks["postgres"] = f"failing: {type(e).__name__}"
        checks["nats"] = "ok" if nc.is_connected else "failing: not connected"
        ok = all(v == "ok" for v in checks.values())
        return _json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
                     {"status": "ok" if ok else "unavailable", "checks": checks})  # fmt: skip

    async def process_request(_: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if path == PATH:
            return None
        if path == "/health/live":
            return _json(HTTPStatus.OK, {"status": "ok"})
        if path == "/health/ready":
            return await ready()
        if path == "/metrics":
            headers = Headers([("Content-Type", CONTENT_TYPE_LATEST)])
            return Response(200, "OK", headers, generate_latest(REGISTRY))
        return _json(HTTPStatus.NOT_FOUND, {"type": "https://hubbub.dev/problems/not_found",
                                            "title": "Not found", "status": 404,
                                            "detail": f"the WebSocket is at {PATH}",
                                            "code": "not_found"})  # fmt: skip

    return process_request


async def _every(seconds: float, work: Any) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            work()
        except Exception:  # the loop must survive one bad round
            log.exception("gateway sweep failed")


@contextlib.asynccontextmanager
async def running(settings: Settings, options: Options | None = None) -> AsyncIterator[Gateway]:
    """A gateway serving until the block ends; then its clients get 1001 and it stops."""
    options = options or Options()
    assert settings.database_url and settings.nats_url, "the CLI resolves the URLs"
    # The library logs every handshake it refuses; ours are expected (health, origins).
    logging.getLogger("websockets").setLevel(logging.WARNING)
    async with contextlib.AsyncExitStack() as stack:
        pool = make_pool(settings.database_url, min_size=2, max_size=16, name="hubbub-gateway")
        await pool.open()
        stack.push_async_callback(pool.close)
        await ensure_all(pool)
        # The projector's frame notices, heard on the freshness listener's connection so
        # that each comes after its batch's checkpoints: the tailer takes them once it is made.
        freshness = Freshness(
            settings.database_url, pool, SOURCES, also={FRAMES_CHANNEL: lambda _: None}
        )
        await freshness.start()
        stack.push_async_callback(freshness.close)
        revoked = RevokedSessions(pool)
        await revoked.start()
        stack.push_async_callback(revoked.close)
        nc = await connect(settings.nats_url, name="hubbub-gateway")
        stack.push_async_callback(nc.close)

        reader = FeedReader(pool)
        # The live tail starts here: what came before is for backfills (after_seq).
        tail = freshness.position_of(SOURCES)
        hub = Hub(reader, Access(pool), tail, queue_bytes=options.queue_bytes)
        tailer = Tailer(reader, freshness, hub.deliver, tail)
        freshness.also[FRAMES_CHANNEL] = tailer.noticed
        stack.push_async_callback(hub.close)
        presence = Presence(nc, settings.gateway_subject("presence"),
                            settings.gateway_subject("typing"), pool, hub,
                            beat_s=options.beat_s, expiry_s=options.expiry_s)  # fmt: skip
        await presence.start()
        stack.push_async_callback(presence.close)
        host = options.host or settings.host
        acks = Acks(options.write_api_url or f"http://{host}:{settings.write_api_port}")
        stack.push_async_callback(acks.close)
        tokens = Tokens(settings.resolved_jwt_secret())
        parts = connection.Parts(tokens, revoked, hub.access, hub, presence, acks)

        tasks = [
            asyncio.create_task(tailer.run()),
            asyncio.create_task(_every(SWEEP_S, lambda: connection.sweep(parts))),
            asyncio.create_task(connection.keepalive(parts, options.ping_s)),
        ]

        async def stop_tasks() -> None:
            # Python 3.11's wait_for (under Freshness.wait) can swallow a cancellation that
            # lands as its wait ends: cancel until the task has really stopped.
            while pending := [t for t in tasks if not t.done()]:
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=0.1)

        stack.push_async_callback(stop_tasks)

        async def handler(ws: ServerConnection) -> None:
            await connection.serve(ws, parts)

        listener = socket.create_server(
            (host, settings.gateway_port if options.port is None else options.port), backlog=4096
        )
        # Accepted sockets inherit it.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, options.send_buffer)
        server = await ws_serve(
            handler, sock=listener,
            origins=[*map(Origin, settings.gateway_origins), None] if settings.gateway_origins else None,
            process_request=_http(pool, nc), server_header=None, compression=None,
            max_size=protocol.MAX_FRAME_BYTES, ping_interval=None,  # connection.keepalive pings
            close_timeout=CLOSE_TIMEOUT_S,
        )  # fmt: skip

        async def stop_server() -> None:
            server.close()
            await server.wait_closed()

        stack.push_async_callback(stop_server)
        port = next(iter(server.sockets)).getsockname()[1]
        log.info("gateway listening", url=f"ws://{host}:{port}{PATH}")
        yield Gateway(server, parts, port, tasks)


async def main(settings: Settings) -> None:
    """`hubbub gateway`: serve until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        async with running(settings) as gateway:
            stopping = asyncio.create_task(stop.wait())
            failing = asyncio.create_task(gateway.failed())
            await asyncio.wait([stopping, failing], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if failing.done():
                # Clients reconnect elsewhere (or here, once the supervisor restarts it)
                # and resume with after_seq: better than a gateway that silently stopped.
                log.error("a gateway task ended; exiting", error=repr(failing.result()))
                raise SystemExit(1)
            failing.cancel()
    except psycopg.OperationalError:
        log.exception("gateway lost PostgreSQL")
        raise
