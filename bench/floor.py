"""The floor under the end-to-end latency figures: the same path, through processes of the
same kinds on the user's stack, with nothing of Hubbub's in them.

`floor_send_to_visible` and `floor_command_to_frame` offer what `chat_send_to_visible` and
`gateway_latency` offer (1,000 messages/s over 50 channels, open loop, the same client) to
stand-ins that each do only what their hop cannot skip:

- write: litestar on uvicorn, served as Hubbub serves its APIs (`infra.cli.serve_http`:
  uvloop, httptools, one write a response). `POST /m` makes a UUIDv7 id and runs one
  autocommit INSERT ... RETURNING (carrying a NOTIFY hint at most every 5 ms, as
  EventStore's appends do). No token, no decision, no hash chain, no envelope.
- relay: LISTEN, then reads the new rows in commit-safe order (xid8, as the store does)
  and publishes them with `Nats-Msg-Id` through `infra.nats.AckedPublisher`, waiting for
  the acknowledgements. No leadership, no checkpoint row, no global chain.
- projector: the durable pull consumer through `infra.nats.PullFeed`; a batch is one
  pipelined transaction: its rows, the checkpoint, a NOTIFY. One read model, acknowledged
  as Hubbub's projector acknowledges (AckPolicy.ALL, at most every 50 ms).
- read: `GET /m/{position}` waits (LISTEN) until the checkpoint has passed the position,
  then runs one SELECT. No token, no authorization.
- gateway: `websockets`, as Hubbub's gateway serves it: takes any auth frame and any
  topic; on each NOTIFY reads the new rows and sends each row's frame to its channel's
  subscribers.

What they cost is what the stack (litestar, uvicorn, psycopg, nats-py, websockets,
PostgreSQL, NATS) costs for the path's shape on this machine: a figure the floor misses
cannot be reached here by trimming Hubbub's own code. The report puts each beside
Hubbub's figure, with the CPU a message of both.

`python -m bench.floor <part>` runs one part, configured by the HUBBUB_* variables
(`Settings.to_env`) as Hubbub's parts are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql

from bench.chat import (
    START_MARGIN_S,
    VISIBLE_CONNECTIONS,
    VISIBLE_RATE,
    VISIBLE_WAIT_MS,
    WARMUP_S,
    Visible,
    visible_result,
)
from bench.chat_stack import HOST, on_own_loop, window
from bench.context import QUICK, BenchContext
from bench.gateway import (
    LATENCY_CHANNELS,
    LATENCY_SECONDS_FULL,
    LATENCY_SECONDS_QUICK,
    LATENCY_SUBSCRIBERS,
    GatewayProcess,
    client_process,
    frame_result,
    measured,
    paced_sends,
)
from bench.http1 import Pool, expect, request_bytes
from bench.payloads import MESSAGE_TEXT
from bench.processes import CpuWatch, free_port, running, wait_all_live
from bench.result import Result
from bench.timing import open_loop
from infra.db import make_pool
from infra.settings import Settings

SECONDS_FULL = 10.0
SECONDS_QUICK = 3.0
HINT_EVERY_S: Final = 0.005  # EventStore's AppendNotifier: at most one hint in 5 ms
ACK_EVERY_S: Final = 0.05  # projections.runner's
HINTS: Final = "floor_appended"
APPLIED: Final = "floor_applied"
PART_MODULE: Final = "bench.floor"

SCHEMA: Final = """
CREATE TABLE floor_log (
    position   bigint GENERATED ALWAYS AS IDENTITY,
    txid       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    message_id uuid NOT NULL,
    channel_id uuid NOT NULL,
    text       text NOT NULL,
    PRIMARY KEY (txid, position)
);
CREATE TABLE floor_messages (
    txid       xid8 NOT NULL,
    position   bigint NOT NULL,
    message_id uuid NOT NULL,
    channel_id uuid NOT NULL,
    text       text NOT NULL,
    PRIMARY KEY (txid, position)
);
CREATE TABLE floor_checkpoint (id int PRIMARY KEY, txid xid8 NOT NULL, position bigint NOT NULL);
INSERT INTO floor_checkpoint VALUES (1, '0', 0);
"""
_INSERT: Final = (
    "INSERT INTO floor_log (message_id, channel_id, text) VALUES (%s, %s, %s)"
    " RETURNING txid::text, position"
)
_INSERT_HINT: Final = (
    f"WITH i AS ({_INSERT}) SELECT txid, position, pg_notify('{HINTS}', '') FROM i"
)
_TAIL: Final = (
    "SELECT txid::text, position, message_id::text, channel_id::text, text FROM floor_log"
    " WHERE (txid, position) > (%s::xid8, %s) AND txid < pg_snapshot_xmin(pg_current_snapshot())"
    " ORDER BY txid, position LIMIT 1000"
)
_APPLY: Final = (
    "INSERT INTO floor_messages SELECT * FROM"
    " unnest(%s::xid8[], %s::bigint[], %s::uuid[], %s::uuid[], %s::text[]) ON CONFLICT DO NOTHING"
)
# Rows arrive in commit-safe order, (txid, position), as in Hubbub: the checkpoint is the
# last one applied, and a position is reached when the checkpoint is at or after it.
_MOVE: Final = "UPDATE floor_checkpoint SET txid = %s::xid8, position = %s WHERE id = 1"
_NOTIFY_APPLIED: Final = f"SELECT pg_notify('{APPLIED}', %s)"
_READ_ONE: Final = (
    "SELECT message_id::text, channel_id::text, text FROM floor_messages"
    " WHERE txid = %s::xid8 AND position = %s"
)
_READ_AFTER: Final = (
    "SELECT txid::text, position, message_id::text, channel_id::text FROM floor_messages"
    " WHERE (txid, position) > (%s::xid8, %s) AND (txid, position) <= (%s::xid8, %s)"
    " ORDER BY txid, position"
)
At = tuple[int, int]  # (txid, position): a place in commit-safe order


class Posted(msgspec.Struct):
    channel_id: str
    text: str


class Sent(msgspec.Struct):
    message_id: str
    position: str  # "<txid>:<position>", as the read part takes it back


class Row(msgspec.Struct, array_like=True):
    """A row as the relay publishes it and the projector applies it."""

    txid: int
    position: int
    message_id: str
    channel_id: str
    text: str


# --- the parts ---------------------------------------------------------------------------


class Applied:
    """The checkpoint, as its NOTIFYs bring it, and the callers waiting for a position."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.at: At = (0, 0)
        self._waiting: list[tuple[At, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self.moved = asyncio.Event()

    async def start(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(APPLIED)))
        cur = await conn.execute("SELECT txid::text::bigint, position FROM floor_checkpoint")
        row = await cur.fetchone()
        self.at = (row[0], row[1]) if row else (0, 0)
        self._task = asyncio.create_task(self._listen(conn))

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async with conn:
            async for note in conn.notifies():
                txid, _, position = note.payload.partition(":")
                at = (int(txid), int(position))
                if at <= self.at:
                    continue
                self.at = at
                self.moved.set()
                still = []
                for position, fut in self._waiting:
                    if position > at:
                        still.append((position, fut))
                    elif not fut.done():
                        fut.set_result(None)
                self._waiting = still

    async def reach(self, position: At, timeout_s: float) -> None:
        if self.at < position:
            fut = asyncio.get_running_loop().create_future()
            self._waiting.append((position, fut))
            await asyncio.wait_for(fut, timeout_s)


def write_app(settings: Settings) -> Any:
    from litestar import Litestar, Request, get, post
    from uuid_utils.compat import uuid7

    pool = make_pool(settings.database_url or "", min_size=4, max_size=8, name="floor-write")
    posted = msgspec.json.Decoder(Posted)
    last_hint = [0.0]

    @post("/m", status_code=201)
    async def send(request: Request[Any, Any, Any]) -> dict[str, Any]:
        body = posted.decode(await request.body())
        now = time.monotonic()
        hint = now - last_hint[0] >= HINT_EVERY_S
        if hint:
            last_hint[0] = now
        message_id = uuid7()
        async with pool.connection() as conn:
            cur = await conn.execute(_INSERT_HINT if hint else _INSERT,
                                     (message_id, uuid.UUID(body.channel_id), body.text),
                                     prepare=True)  # fmt: skip
            row = await cur.fetchone()
        assert row is not None
        return {"message_id": str(message_id), "position": f"{row[0]}:{row[1]}"}

    @get("/health/live")
    async def live() -> str:
        return "ok"

    async def start() -> None:
        await pool.open(wait=True)

    return Litestar([send, live], on_startup=[start], logging_config=None)


def read_app(settings: Settings) -> Any:
    from litestar import Litestar, get

    url = settings.database_url or ""
    pool = make_pool(url, min_size=4, max_size=8, name="floor-read")
    applied = Applied(url)

    @get("/m/{at:str}")
    async def read(at: str) -> dict[str, Any]:
        txid, _, position = at.partition(":")
        await applied.reach((int(txid), int(position)), VISIBLE_WAIT_MS / 1000)
        async with pool.connection() as conn:
            cur = await conn.execute(_READ_ONE, (txid, int(position)), prepare=True)
            row = await cur.fetchone()
        assert row is not None
        return {"message_id": row[0], "channel_id": row[1], "text": row[2]}

    @get("/health/live")
    async def live() -> str:
        return "ok"

    async def start() -> None:
        await pool.open(wait=True)
        await applied.start()

    return Litestar([read, live], on_startup=[start], logging_config=None)


async def relay(settings: Settings) -> None:
    from infra.nats import AckedPublisher, connect, ensure_stream

    url = settings.database_url or ""
    nc = await connect(settings.nats_url or "", name="floor-relay")
    await ensure_stream(nc.jetstream(), settings)
    publisher = AckedPublisher(nc)
    subject = settings.subject("floor", "Posted")
    encode = msgspec.json.Encoder().encode
    reader = await psycopg.AsyncConnection.connect(url, autocommit=True)
    listener = await psycopg.AsyncConnection.connect(url, autocommit=True)
    # A projector's open transaction holds the commit-safe horizon back, as in Hubbub:
    # its commits wake the relay too.
    for channel in (HINTS, APPLIED):
        await listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    txid, position = "0", 0
    while True:
        while True:
            cur = await reader.execute(_TAIL, (txid, position), prepare=True)
            rows = await cur.fetchall()
            if not rows:
                break
            await publisher.publish(
                [(subject, encode(Row(int(r[0]), r[1], r[2], r[3], r[4])), {"Nats-Msg-Id": r[2]})
                 for r in rows], 5.0,
            )  # fmt: skip
            txid, position = rows[-1][0], rows[-1][1]
        async for _ in listener.notifies(timeout=0.05, stop_after=1):
            pass


async def projector(settings: Settings) -> None:
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    from infra.nats import PullFeed, connect, ensure_stream

    nc = await connect(settings.nats_url or "", name="floor-projector")
    js = nc.jetstream()
    await ensure_stream(js, settings)
    await js.add_consumer(settings.nats_stream, ConsumerConfig(
        durable_name="floor", ack_policy=AckPolicy.ALL, deliver_policy=DeliverPolicy.ALL,
        max_ack_pending=20_000, filter_subject=settings.subject_filter,
    ))  # fmt: skip
    feed = PullFeed(nc, settings.nats_stream, "floor")
    await feed.start()
    conn = await psycopg.AsyncConnection.connect(settings.database_url or "")
    await conn.execute("SET synchronous_commit = off")  # as the projector's batches
    await conn.commit()
    decode = msgspec.json.Decoder(Row).decode
    acked = time.monotonic()
    while True:
        msgs = await feed.next_batch(1.0)
        if not msgs:
            continue
        rows = [decode(m.data) for m in msgs]
        last = rows[-1]
        columns = ([str(r.txid) for r in rows], [r.position for r in rows],
                   [r.message_id for r in rows], [r.channel_id for r in rows],
                   [r.text for r in rows])  # fmt: skip
        async with conn.pipeline():
            await conn.execute(_APPLY, columns, prepare=True)
            await conn.execute(_MOVE, (str(last.txid), last.position), prepare=True)
            await conn.execute(_NOTIFY_APPLIED, (f"{last.txid}:{last.position}",), prepare=True)
            await conn.commit()
        if time.monotonic() - acked >= ACK_EVERY_S:
            await msgs[-1].ack()
            acked = time.monotonic()


async def gateway(settings: Settings) -> None:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    url = settings.database_url or ""
    applied = Applied(url)
    await applied.start()
    subscribers: dict[str, set[ServerConnection]] = {}

    async def handler(ws: ServerConnection) -> None:
        topics: list[str] = []
        try:
            async for raw in ws:  # until the client goes (closing or not)
                op = json.loads(raw)
                if op.get("op") == "auth":
                    await ws.send('{"type":"authenticated"}')
                elif op.get("op") == "subscribe":
                    topic = str(op["topic"]).removeprefix("channel:")
                    subscribers.setdefault(topic, set()).add(ws)
                    topics.append(topic)
                    await ws.send(json.dumps({"type": "subscribed", "topic": op["topic"]}))
        except ConnectionClosed:
            pass
        finally:
            for topic in topics:
                subscribers.get(topic, set()).discard(ws)

    encode = msgspec.json.Encoder().encode

    async def tail() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            sent = applied.at
            while True:
                await applied.moved.wait()
                applied.moved.clear()
                upto = applied.at
                cur = await conn.execute(_READ_AFTER, (str(sent[0]), sent[1], str(upto[0]), upto[1]),
                                         prepare=True)  # fmt: skip
                for txid, position, message_id, channel_id in await cur.fetchall():
                    frame = encode({"type": "event", "topic": f"channel:{channel_id}",
                                    "seq": position, "data": {"message_id": message_id}}).decode()  # fmt: skip
                    for ws in list(subscribers.get(channel_id, ())):
                        with contextlib.suppress(ConnectionClosed):
                            await ws.send(frame)
                    sent = (int(txid), position)

    async with serve(handler, settings.host, settings.gateway_port, compression=None):
        await tail()


def main(argv: list[str]) -> None:
    """Run one part (`write`, `read`, `relay`, `projector`, `gateway`) until killed."""
    from infra.cli import run_service, serve_http

    settings = Settings.from_env()
    part = argv[0]
    if part in ("write", "read"):
        port = settings.write_api_port if part == "write" else settings.read_api_port
        app = write_app if part == "write" else read_app
        serve_http(lambda: app(settings), settings, port)
        return
    service = {"relay": relay, "projector": projector, "gateway": gateway}[part]
    run_service(service(settings))


# --- the workloads -----------------------------------------------------------------------


@dataclass(frozen=True)
class Floor:
    """The floor's parts, running on `settings`."""

    settings: Settings
    procs: dict[str, subprocess.Popen[bytes]]
    nats_pid: int | None

    def post(self, channel_id: str) -> bytes:
        """A message's POST to the write part."""
        return request_bytes("POST", "/m", f"{HOST}:{self.settings.write_api_port}", None,
                             msgspec.json.encode(Posted(channel_id, MESSAGE_TEXT)))  # fmt: skip

    def pids(self) -> dict[str, int]:
        """The parts' processes, and NATS's when this run started it."""
        nats = {"nats": self.nats_pid} if self.nats_pid is not None else {}
        return {part: p.pid for part, p in self.procs.items()} | nats


@contextlib.asynccontextmanager
async def floor(ctx: BenchContext, scope: str, *parts: str) -> AsyncIterator[Floor]:
    """The floor's `parts` on a scratch database with its schema and a JetStream stream of
    their own, all stopped on exit."""
    with ctx.scratch_database(scope) as url:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(SCHEMA)
        settings = replace(ctx.nats.settings(url, scope=scope), write_api_port=free_port(),
                           read_api_port=free_port(), gateway_port=free_port())  # fmt: skip
        with running(settings, *parts, module=PART_MODULE) as started:
            procs = dict(zip(parts, started, strict=True))
            ports = {"write": settings.write_api_port, "read": settings.read_api_port}
            await wait_all_live({part: (f"http://{HOST}:{ports[part]}", procs[part])
                                 for part in parts if part in ports})  # fmt: skip
            yield Floor(settings, procs, ctx.nats.pid)


def _seconds(ctx: BenchContext, full: float, quick: float) -> float:
    return quick if ctx.sizes is QUICK else full


_SENT = msgspec.json.Decoder(Sent)


async def floor_send_to_visible(ctx: BenchContext) -> Result:
    """chat_send_to_visible's path and load through the floor's parts."""
    seconds = _seconds(ctx, SECONDS_FULL, SECONDS_QUICK)
    async with floor(ctx, "floor_visible", "write", "read", "relay", "projector") as f:
        channels = [str(uuid.uuid4()) for _ in range(LATENCY_CHANNELS)]
        posts = [f.post(c) for c in channels]
        read_host = f"{HOST}:{f.settings.read_api_port}"

        async def run(count: int, start: float, rate: float) -> list[Visible]:
            writes = Pool(HOST, f.settings.write_api_port, VISIBLE_CONNECTIONS)
            reads = Pool(HOST, f.settings.read_api_port, VISIBLE_CONNECTIONS)

            async def one(i: int, scheduled: float) -> Visible:
                async with writes.connection() as conn:
                    sent = time.perf_counter()
                    answer = _SENT.decode(await expect(conn, posts[i % len(posts)], 201,
                                                       lambda: "floor post"))  # fmt: skip
                accepted = time.perf_counter()
                get = request_bytes("GET", f"/m/{answer.position}", read_host)
                async with reads.connection() as conn:
                    await expect(conn, get, 200, lambda: "floor read")
                return Visible(scheduled, sent, accepted, time.perf_counter())

            try:
                return await open_loop(one, start, count, rate, "floor messages")
            finally:
                writes.close()
                reads.close()

        await on_own_loop(lambda: run(200, time.perf_counter(), 200.0))  # warm: 1 s at 200/s
        start = time.perf_counter() + START_MARGIN_S
        opens = start + WARMUP_S
        closes = opens + seconds
        count = int((closes - start) * VISIBLE_RATE)
        span, seen = await asyncio.gather(
            window(opens, closes, CpuWatch(f.pids())),
            on_own_loop(lambda: run(count, start, VISIBLE_RATE)),
        )  # fmt: skip
    return visible_result("floor_send_to_visible", seen, span, channels=f"{LATENCY_CHANNELS}")


async def floor_command_to_frame(ctx: BenchContext) -> Result:
    """gateway_latency's path and load through the floor's parts."""
    seconds = _seconds(ctx, LATENCY_SECONDS_FULL, LATENCY_SECONDS_QUICK)
    async with floor(ctx, "floor_frame", "write", "relay", "projector", "gateway") as f:
        channels = [str(uuid.uuid4()) for _ in range(LATENCY_CHANNELS)]
        posts = [f.post(c) for c in channels]
        watchers = [("-", f"channel:{c}") for c in channels for _ in range(LATENCY_SUBSCRIBERS)]
        gw = GatewayProcess(f.settings.gateway_port, f.procs["gateway"])
        await _until_listening(f.settings.gateway_port)
        async with client_process(gw, watchers, record_messages=True) as watching:
            await watching.ready()
            sends, opens, busy, cpu, done = await measured(
                f.pids(), watching, seconds,
                lambda start, count: paced_sends(f.settings.write_api_port, posts, start, count),
            )  # fmt: skip
    return frame_result("floor_command_to_frame", sends, opens, busy, cpu, done["seen"],
                        channels=f"{LATENCY_CHANNELS}, {LATENCY_SUBSCRIBERS} subscribers each")  # fmt: skip


async def _until_listening(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"nothing listened on port {port} within {timeout_s:.0f} s"
                ) from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return


if __name__ == "__main__":
    main(sys.argv[1:])
