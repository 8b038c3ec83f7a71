"""The users read model: public profiles (never the password hash). A forgotten user keeps
their row, erased: no username, no display name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql

from events.envelope import Envelope
from events.personal import erased
from events.registry import decode
from events.user import RoleGranted, RoleRevoked, UserForgotten, UserRegistered
from infra.pipeline import Statements

name = "users"
version = 3  # 2: roles, 3: erasure
types = frozenset({"UserRegistered", "RoleGranted", "RoleRevoked", "UserForgotten"})


def ddl(schema: str) -> list[str]:
    """The users table, keyed by id, with usernames unique (an erased one is NULL)."""
    s = sql.Identifier(schema).as_string()
    return [
        f"CREATE TABLE {s}.users ("
        " user_id uuid PRIMARY KEY,"
        " username text UNIQUE,"
        " display_name text,"
        " registered_at timestamptz NOT NULL,"
        " roles text[] NOT NULL DEFAULT '{}',"
        " stream_version bigint NOT NULL,"
        " forgotten_at timestamptz)"
    ]


async def apply(conn: Statements, schema: str, events: Sequence[Envelope]) -> None:
    """Registered users, and their roles; an event applied twice changes nothing (each
    row remembers the stream version it has seen)."""
    table = sql.SQL("{}.users").format(sql.Identifier(schema))
    registered = []
    for envelope in events:
        event = decode(envelope.type, envelope.schema_version, envelope.data)
        if isinstance(event, UserRegistered):
            registered.append(
                (event.user_id, erased(event.username), erased(event.display_name),
                 event.registered_at, envelope.stream_version)
            )  # fmt: skip
            continue
        if registered:  # keep order: a role may follow its user's registration in one batch
            await _insert(conn, table, registered)
            registered = []
        if isinstance(event, UserForgotten):
            await conn.execute(
                sql.SQL("UPDATE {} SET username = NULL, display_name = NULL, roles = '{{}}',"
                        " forgotten_at = %s, stream_version = %s"
                        " WHERE user_id = %s AND stream_version < %s").format(table),
                (event.forgotten_at, envelope.stream_version, event.user_id,
                 envelope.stream_version),
            )  # fmt: skip
        elif isinstance(event, RoleGranted | RoleRevoked):
            change = (
                "array_append(array_remove(roles, %s), %s)"
                if isinstance(event, RoleGranted)
                else "array_remove(roles, %s)"
            )
            params: tuple[Any, ...] = (
                (event.role, event.role) if isinstance(event, RoleGranted) else (event.role,)
            )
            await conn.execute(
                sql.SQL("UPDATE {} SET roles = " + change + ", stream_version = %s"
                        " WHERE user_id = %s AND stream_version < %s").format(table),
                (*params, envelope.stream_version, event.user_id, envelope.stream_version),
            )  # fmt: skip
    if registered:
        await _insert(conn, table, registered)


async def _insert(conn: Statements, table: sql.Composable, rows: list[tuple[Any, ...]]) -> None:
    await conn.executemany(
        sql.SQL(
            "INSERT INTO {} (user_id, username, display_name, registered_at, stream_version)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id) DO NOTHING"
        ).format(table),
        rows,
    )
