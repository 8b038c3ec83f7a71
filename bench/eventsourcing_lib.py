"""The `eventsourcing` library (9.x) on the same PostgreSQL server, doing what append_single
does: one event per save from concurrent writers (threads, as the library is synchronous),
half creating a new aggregate, half extending the writer's own. Its tables live in a
database of their own, created for the run and dropped after it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any
from uuid import UUID

import psycopg
import psycopg.conninfo
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from bench.context import BenchContext
from bench.payloads import MESSAGE_TEXT
from bench.result import Result, rate
from bench.timing import Measured, stopwatch


class Channel(Aggregate):
    """A chat channel, as small as the library allows."""

    @event("Opened")
    def __init__(self, name: str) -> None:
        self.name = name

    @event("MessagePosted")
    def post(self, author_id: str, text: str) -> None:
        """Record a message (no state kept: only the event matters here)."""


class Chat(Application[UUID]):
    """The application; its events table is `chat_events`."""


def library_env(url: str, pool_size: int) -> dict[str, str]:
    """The library's settings (PERSISTENCE_MODULE, POSTGRES_*) for the database `url` names."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(info["dbname"]),
        "POSTGRES_HOST": str(info.get("host") or "127.0.0.1"),
        "POSTGRES_PORT": str(info.get("port") or 5432),
        "POSTGRES_USER": str(info.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(info.get("password") or ""),
        # As many connections as writers, like our pool; no overflow to hide waits in.
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "0",
        "CREATE_TABLE": "y",
    }


class _Gate:
    """Writers warm up, report ready, and start the timed part together on `go`."""

    def __init__(self, writers: int) -> None:
        self.ready = threading.Barrier(writers + 1)
        self.go = threading.Event()
        self.errors: list[BaseException] = []


def _writer(app: Chat, warmup: int, n: int, gate: _Gate) -> None:
    try:
        author = str(threading.get_ident())
        own = Channel(name=f"own-{author}")
        app.save(own)

        def step(i: int) -> None:
            if i % 2 == 0:
                app.save(Channel(name=f"c-{author}-{i}"))
            else:
                own.post(author_id=author, text=MESSAGE_TEXT)
                app.save(own)

        for i in range(warmup):
            step(i)
        gate.ready.wait()
        gate.go.wait()
        for i in range(warmup, warmup + n):
            step(i)
    except BaseException as e:
        gate.errors.append(e)
        gate.ready.abort()  # nobody waits for a writer that is gone


def _measure(url: str, writers: int, warmup: int, per_writer: int) -> Measured:
    app = Chat(env=library_env(url, writers))
    gate = _Gate(writers)
    threads = [
        threading.Thread(target=_writer, args=(app, warmup, per_writer, gate))
        for _ in range(writers)
    ]
    try:
        for t in threads:
            t.start()
        with contextlib.suppress(threading.BrokenBarrierError):
            gate.ready.wait()  # every writer has warmed up (broken when one failed)
        with stopwatch() as m:
            gate.go.set()
            for t in threads:
                t.join()
        if gate.errors:
            raise gate.errors[0]
        return m
    finally:
        gate.go.set()
        for t in threads:
            t.join()
        app.close()


async def run(ctx: BenchContext) -> Result:
    """Events/s of the library's single-event saves by `writers` threads."""
    sizes = ctx.sizes
    per_writer = sizes.eventsourcing // sizes.writers
    with ctx.scratch_database("es") as url:
        measured = await asyncio.to_thread(_measure, url, sizes.writers, sizes.warmup, per_writer)
        stored = _stored(url)
    n = per_writer * sizes.writers
    # Every writer also saved its own channel's first event, before its warm-up.
    expected = sizes.writers * (1 + sizes.warmup + per_writer)
    if stored != expected:
        raise RuntimeError(f"the library stored {stored} events, expected {expected}")
    extra: dict[str, Any] = {"writers": sizes.writers, "library": _version(), "stored": stored}
    return rate("eventsourcing_lib", n, measured, "events/s", **extra)


def _stored(url: str) -> int:
    """Rows in the library's events table: proof that it wrote where we think it did."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM chat_events").fetchone()
    return int(row[0]) if row else 0


def _version() -> str:
    from importlib.metadata import version

    return f"eventsourcing {version('eventsourcing')}"
