"""Read-your-writes: knowing how far each projection has got, and waiting for it.

The projector NOTIFYs `hubbub_projection` with `name:token` after each batch commits; one
listening connection per process keeps the positions, and waiters wake on every change.
Notifications are a hint: waiters also re-read the checkpoints now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping

import psycopg
import structlog
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from events.envelope import ORIGIN, Position
from infra.db import configure
from infra.store import PROJECTION_CHANNEL
from projections.runtime import live_schema, notified

log = structlog.get_logger(__name__)

DEFAULT_WAIT_S = 2.0
MAX_WAIT_MS = 10_000


class Freshness:
    """The applied position of each projection, kept current by LISTEN."""

    def __init__(
        self,
        url: str,
        pool: AsyncConnectionPool,
        names: Iterable[str],
        *,
        also: Mapping[str, Callable[[str], None]] | None = None,
    ) -> None:
        """`also`: more channels to listen to on the same connection, each with the function
        its payloads are given to, in the order they come (a projector's notifications
        come in the order it sent them, before any of its later commits')."""
        self.url = url
        self.pool = pool
        self.names = list(names)
        self.also = dict(also or {})
        self.positions: dict[str, Position] = dict.fromkeys(self.names, ORIGIN)
        # Requests waiting for a position: each is woken once, when it is reached, rather
        # than every waiter on every notification.
        self._waiters: list[tuple[list[str], Position, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._listen())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _advance(self, name: str, position: Position) -> None:
        if position > self.positions.get(name, ORIGIN):
            self.positions[name] = position

    def _wake(self) -> None:
        """Resolve the waiters whose projections have all reached their position."""
        waiting = []
        for names, at_least, future in self._waiters:
            if future.done():
                continue
            if self.position_of(names) >= at_least:
                future.set_result(None)
            else:
                waiting.append((names, at_least, future))
        self._waiters = waiting

    async def refresh(self) -> None:
        """Read every checkpoint from the database."""
        async with self.pool.connection() as conn:
            for name in self.names:
                try:
                    cur = await conn.execute(
                        sql.SQL("SELECT txid, position FROM {}.checkpoint WHERE id = 1").format(
                            sql.Identifier(live_schema(name))
                        )
                    )
                except psycopg.errors.UndefinedTable:
                    continue  # not created yet: the projector makes it at start
                row = await cur.fetchone()
                if row:
                    self._advance(name, Position(row[0], row[1]))
        self._wake()

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, application_name="hubbub-read-freshness"
                ) as conn:
                    configure(conn)
                    for channel in (PROJECTION_CHANNEL, *self.also):
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    await self.refresh()  # whatever happened while we were not listening
                    backoff = 0.1
                    async for note in conn.notifies():
                        if (handler := self.also.get(note.channel)) is not None:
                            try:
                                handler(note.payload)
                            except Exception:  # one bad payload must not stop the listener
                                log.exception("notification not handled", channel=note.channel)
                            continue
                        names, token = notified(note.payload)
                        with contextlib.suppress(ValueError):
                            position = Position.parse(token)
                            for name in names:
                                self._advance(name, position)
                            self._wake()
            except psycopg.Error as e:
                log.warning("freshness listener lost its connection", error=str(e))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                with contextlib.suppress(psycopg.Error):
                    await self.refresh()  # waiters still move on while we are not listening

    def position_of(self, names: Iterable[str]) -> Position:
        """How far all of `names` have got: the least of their positions."""
        return min((self.positions.get(n, ORIGIN) for n in names), default=ORIGIN)

    async def wait(self, names: list[str], at_least: Position, wait_s: float) -> bool:
        """Wait until every projection in `names` has applied `at_least`; False on timeout."""
        if self.position_of(names) >= at_least:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((names, at_least, future))
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            async with asyncio.timeout(wait_s):
                await future
        except TimeoutError:
            await self.refresh()  # a notification may have gone missing: ask the tables
            return self.position_of(names) >= at_least
        return True
