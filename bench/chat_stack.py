"""What the chat workloads stand on: Hubbub's processes on a scratch database, signed-in
users, channels with members, requests prepared in advance, a loop of the client's own,
and where the CPU went.

Users are registered by appending their events straight to the store and signed in with
access tokens issued by the processes' own JWT secret, exactly as login would issue them:
argon2 would otherwise cost about a second of CPU per user before anything is measured
(the login workload measures that path). Channels are created and joined over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import secrets
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from bench.context import BenchContext
from bench.http1 import HttpError, Pool, expect, request_bytes
from bench.processes import CpuWatch, free_port, running, wait_all_live
from bench.result import Result, rate
from bench.timing import SERVER, Measured, quantile, stopwatch
from events.registry import encode
from events.user import UsernameClaimed, UserRegistered, user_stream
from infra.db import make_pool, migrate
from infra.settings import Settings
from infra.store import NO_STREAM, EventStore, NewEvent, StreamAppend
from infra.tokens import Tokens
from infra.vault import Vault

T = TypeVar("T")

HOST = "127.0.0.1"
USERS_PER_APPEND = 100  # 200 streams a transaction
SETUP_CONNECTIONS = 16


@dataclass(frozen=True)
class Member:
    """A registered user and the Authorization header of a fresh access token."""

    user_id: str
    auth: dict[str, str]


@dataclass(frozen=True)
class Stack:
    """Hubbub's processes on a scratch database, and the store under them."""

    settings: Settings
    store: EventStore
    procs: dict[str, subprocess.Popen[bytes]]
    nats_pid: int | None

    @property
    def write_host(self) -> str:
        return f"{HOST}:{self.settings.write_api_port}"

    @property
    def read_host(self) -> str:
        return f"{HOST}:{self.settings.read_api_port}"

    def write_pool(self, limit: int) -> Pool:
        """Keep-alive connections to the write API (open them on the loop that uses them)."""
        return Pool(HOST, self.settings.write_api_port, limit)

    def read_pool(self, limit: int) -> Pool:
        """Keep-alive connections to the read API."""
        return Pool(HOST, self.settings.read_api_port, limit)

    def pids(self) -> dict[str, int]:
        """Hubbub's processes, and NATS's when this run started it and uses it."""
        watched = {name: proc.pid for name, proc in self.procs.items()}
        if self.nats_pid is not None and any(p in self.procs for p in ("relay", "projector")):
            watched["nats"] = self.nats_pid
        return watched

    def cpu_watch(self) -> CpuWatch:
        """The CPU of `pids()`."""
        return CpuWatch(self.pids())


@contextlib.asynccontextmanager
async def stack(ctx: BenchContext, scope: str, *parts: str) -> AsyncIterator[Stack]:
    """`parts` (write-api, read-api, relay, projector) running on a fresh, migrated
    database with a JWT secret of their own and, when there is a relay, a JetStream stream
    of their own; everything stopped and dropped on exit."""
    with ctx.scratch_database(scope) as url:
        await asyncio.to_thread(migrate, url)
        settings = replace(ctx.nats.settings(url, scope=scope), write_api_port=free_port(),
                           read_api_port=free_port(), jwt_secret=secrets.token_hex(32))  # fmt: skip
        with running(settings, *parts) as started:
            procs = dict(zip(parts, started, strict=True))
            ports = {"write-api": settings.write_api_port, "read-api": settings.read_api_port}
            await wait_all_live({part: (f"http://{HOST}:{ports[part]}", procs[part])
                                 for part in parts if part in ports})  # fmt: skip
            pool = make_pool(url, min_size=2, max_size=4, name=f"bench-{scope}")
            await pool.open(wait=True, timeout=60)
            try:
                yield Stack(settings, EventStore(pool, notify=False), procs, ctx.nats.pid)
            finally:
                await pool.close()


def _new_event(event: msgspec.Struct) -> NewEvent:
    type_name, version, data = encode(event)
    return NewEvent(event_id=uuid.uuid4(), type=type_name, data=data,
                    metadata=b'{"correlation_id":"bench"}', schema_version=version)  # fmt: skip


async def register(stack: Stack, n: int) -> list[Member]:
    """`n` registered users, each with a bearer token from the processes' own secret."""
    tokens = Tokens(stack.settings.resolved_jwt_secret())
    vault = await Vault.load(stack.store.pool)
    members: list[Member] = []
    while len(members) < n:
        appends: list[StreamAppend] = []
        for _ in range(min(USERS_PER_APPEND, n - len(members))):
            uid = str(uuid.uuid4())
            username = f"u{uid.replace('-', '')[:20]}"
            registered = UserRegistered(user_id=uid, username=username, display_name="Bench User",
                                        password_hash="-", registered_at=datetime.now(UTC))  # fmt: skip
            appends += [
                StreamAppend(vault.username_stream(username), NO_STREAM,
                             [_new_event(UsernameClaimed(username=username, user_id=uid))]),
                StreamAppend(user_stream(uid), NO_STREAM, [_new_event(registered)]),
            ]  # fmt: skip
            token, _ = tokens.issue(uid, str(uuid.uuid4()), frozenset())
            members.append(Member(uid, {"Authorization": f"Bearer {token}"}))
        await stack.store.append(appends)
    return members


class _Created(msgspec.Struct):
    channel_id: str


async def open_channels(stack: Stack, groups: Sequence[Sequence[Member]]) -> list[str]:
    """A public channel per group, created by its first member and joined by the others,
    over HTTP; their ids, in the groups' order."""
    pool = stack.write_pool(SETUP_CONNECTIONS)
    host = stack.write_host
    decoder = msgspec.json.Decoder(_Created)

    async def one(index: int, group: Sequence[Member]) -> str:
        owner, *others = group
        body = msgspec.json.encode({"name": f"bench-{index}-{uuid.uuid4().hex[:8]}",
                                    "visibility": "public"})  # fmt: skip
        async with pool.connection() as conn:
            created = await expect(conn, request_bytes("POST", "/v1/channels", host, owner.auth, body),
                                   201, lambda: f"create channel {index}")  # fmt: skip
        channel_id = decoder.decode(created).channel_id
        for member in others:
            join = request_bytes(
                "POST", f"/v1/channels/{channel_id}/join", host, member.auth, b"{}"
            )
            async with pool.connection() as conn:
                await expect(conn, join, 200, lambda: f"join channel {index}")
        return channel_id

    try:
        return list(await asyncio.gather(*(one(i, g) for i, g in enumerate(groups))))
    finally:
        pool.close()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


async def on_own_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `main()` on an event loop of its own (uvloop when installed) in a thread: the
    load generator's connections and timers never wait on the harness's loop, and cost
    the client as little CPU as they can. The garbage collector stops seeing what exists
    before (as in timing.stopwatch) so that no full collection pauses the load."""

    def run() -> T:
        gc.collect()
        gc.freeze()
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                return runner.run(main())
        finally:
            gc.unfreeze()

    return await asyncio.to_thread(run)


def percentiles_ms(seconds: Sequence[float], prefix: str = "") -> dict[str, float]:
    """p50, p90, p99 and max of latencies given in seconds, as rounded milliseconds."""
    ms = sorted(s * 1000.0 for s in seconds)
    if not ms:
        return {}
    return {f"{prefix}p50_ms": round(quantile(ms, 0.50), 2),
            f"{prefix}p90_ms": round(quantile(ms, 0.90), 2),
            f"{prefix}p99_ms": round(quantile(ms, 0.99), 2),
            f"{prefix}max_ms": round(ms[-1], 2)}  # fmt: skip


async def window(start: float, end: float, watch: CpuWatch) -> Span:
    """The CPU and wall time between perf_counter instants `start` and `end`, measured
    from this (the harness's) thread while the load runs on its own."""
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    watch.mark()
    with stopwatch(freeze=False) as m:
        opened = time.perf_counter()
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        closed = time.perf_counter()
    return Span(m, watch.since(), opened, closed)


@dataclass
class Span:
    """What a timed window saw: wall time, this process's CPU, PostgreSQL's, the
    machine's, and each Hubbub process's."""

    measured: Measured
    parts: dict[str, float]
    start: float  # perf_counter at the window's opening
    end: float


def cpu_result(name: str, n: int, span: Span, unit: str, **extra: Any) -> Result:
    """bench.result.rate, with "server" meaning everything on the server side (PostgreSQL
    and Hubbub's processes): the rest of the machine's busy time is then other work."""
    m = span.measured
    parts_cpu = sum(span.parts.values())
    split = {"postgres": m.server_cpu} if m.server_cpu is not None else {}
    split.update(span.parts)
    server = Measured(seconds=m.seconds, client_cpu=m.client_cpu,
                      server_cpu=(m.server_cpu or 0.0) + parts_cpu, machine_cpu=m.machine_cpu)  # fmt: skip
    extra["server_cpu_split_us_per_op"] = ", ".join(
        f"{k} {v / n * 1e6:.0f}" for k, v in split.items()
    )
    if SERVER.pid is None:
        extra["server_cpu_note"] = "PostgreSQL is not local: its CPU is not counted"
    return rate(name, n, server, unit, **extra)


def checked(condition: bool, message: Callable[[], str]) -> None:
    """HttpError when a response is not what the workload expects."""
    if not condition:
        raise HttpError(message())
