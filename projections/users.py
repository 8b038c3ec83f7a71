"""The users read model: public profiles (never the password hash)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from events.envelope import Envelope
from events.registry import decode
from events.user import UserRegistered

name = "users"
types = frozenset({"UserRegistered"})


def ddl(schema: str) -> list[str]:
    """The users table, keyed by id, with usernames unique."""
    s = sql.Identifier(schema).as_string()
    return [
        f"CREATE TABLE {s}.users ("
        " user_id uuid PRIMARY KEY,"
        " username text NOT NULL UNIQUE,"
        " display_name text NOT NULL,"
        " registered_at timestamptz NOT NULL,"
        " stream_version bigint NOT NULL)"
    ]


async def apply(
    conn: psycopg.AsyncConnection[Any], schema: str, events: Sequence[Envelope]
) -> None:
    """Insert registered users; a repeated event changes nothing."""
    rows = []
    for envelope in events:
        event = decode(envelope.type, envelope.schema_version, envelope.data)
        if isinstance(event, UserRegistered):
            rows.append(
                (event.user_id, event.username, event.display_name, event.registered_at,
                 envelope.stream_version)
            )  # fmt: skip
    if rows:
        async with conn.cursor() as cur:
            await cur.executemany(
                sql.SQL(
                    "INSERT INTO {}.users (user_id, username, display_name, registered_at,"
                    " stream_version) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id) DO NOTHING"
                ).format(sql.Identifier(schema)),
                rows,
            )
