"""The sessions read model, and the revocation list every service checks tokens against."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import psycopg
import structlog
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from events.envelope import Envelope
from events.registry import decode
from events.session import SessionRevoked, SessionStarted
from events.user import UserForgotten
from infra.pipeline import Statements

log = structlog.get_logger(__name__)

name = "sessions"
version = 2  # 2: a forgotten user's sessions end
types = frozenset({"SessionStarted", "SessionRevoked", "UserForgotten"})


def ddl(schema: str) -> list[str]:
    """One row per session; revoked ones carry when and why."""
    s = sql.Identifier(schema).as_string()
    return [
        f"CREATE TABLE {s}.sessions ("
        " session_id uuid PRIMARY KEY, user_id uuid NOT NULL,"
        " started_at timestamptz NOT NULL, expires_at timestamptz NOT NULL,"
        " revoked_at timestamptz, reason text)",
        f"CREATE INDEX ON {s}.sessions (user_id) WHERE revoked_at IS NULL",
        f"CREATE INDEX ON {s}.sessions (revoked_at) WHERE revoked_at IS NOT NULL",
    ]


async def apply(conn: Statements, schema: str, events: Sequence[Envelope]) -> None:
    """Sessions start and are revoked; applying an event twice changes nothing."""
    table = sql.SQL("{}.sessions").format(sql.Identifier(schema))
    for envelope in events:
        event = decode(envelope.type, envelope.schema_version, envelope.data)
        if isinstance(event, SessionStarted):
            await conn.execute(
                sql.SQL("INSERT INTO {} (session_id, user_id, started_at, expires_at) VALUES (%s, %s, %s, %s)"
                        " ON CONFLICT (session_id) DO NOTHING").format(table),
                (event.session_id, event.user_id, event.started_at, event.expires_at),
            )  # fmt: skip
        elif isinstance(event, SessionRevoked):
            await conn.execute(
                sql.SQL(
                    "UPDATE {} SET revoked_at = %s, reason = %s WHERE session_id = %s AND revoked_at IS NULL"
                ).format(table),
                (event.revoked_at, event.reason, event.session_id),
            )
        elif isinstance(event, UserForgotten):  # every token of theirs stops working
            await conn.execute(
                sql.SQL("UPDATE {} SET revoked_at = %s, reason = 'forgotten'"
                        " WHERE user_id = %s AND revoked_at IS NULL").format(table),
                (event.forgotten_at, event.user_id),
            )  # fmt: skip


class RevokedSessions:
    """The sessions revoked recently enough that their access tokens may still be alive,
    reread every `interval` seconds: a revocation reaches every process within a second.
    """

    def __init__(
        self, pool: AsyncConnectionPool, *, interval: float = 0.25, horizon_s: int = 1800
    ) -> None:
        self.pool = pool
        self.interval = interval
        self.horizon_s = horizon_s  # longer than any access token lives
        self._revoked: frozenset[str] = frozenset()
        self._task: asyncio.Task[None] | None = None

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._revoked

    async def refresh(self) -> None:
        """Reread the list (an unmigrated or unreachable database keeps the old one)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT session_id::text FROM rm_sessions.sessions"
                " WHERE revoked_at > now() - make_interval(secs => %s)",
                (self.horizon_s,),
            )
            self._revoked = frozenset(row[0] for row in await cur.fetchall())

    async def start(self) -> None:
        with contextlib.suppress(psycopg.Error):
            await self.refresh()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except psycopg.Error as e:
                log.warning("could not reread revoked sessions", error=str(e))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
