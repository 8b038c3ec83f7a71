"""The messages read model: every channel's messages in `seq` order, and their reactions.

A deleted message keeps its row (its place in the channel) but loses its text and its
reactions. A forgotten author's messages keep their rows too, marked erased, without text. Idempotence: sending inserts or does nothing; every later change to a message
is guarded by the stream version the message row has seen, so applying twice is harmless
(and a removed reaction cannot come back from a replayed ReactionAdded).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from events.channel import (
    MessageDeleted,
    MessageEdited,
    MessageSent,
    ReactionAdded,
    ReactionRemoved,
)
from events.envelope import Envelope
from events.personal import erased
from events.registry import Event, decode
from events.user import UserForgotten
from infra.pipeline import Statements
from projections.batching import Bulk, Runs, unnest

name = "messages"
version = 2  # 2: erased (forgotten authors)
types = frozenset(
    {"MessageSent", "MessageEdited", "MessageDeleted", "ReactionAdded", "ReactionRemoved",
     "UserForgotten"}
)  # fmt: skip


def ddl(schema: str) -> list[str]:
    """Messages keyed by (channel, seq); reactions keyed by who reacted with what."""
    s = sql.Identifier(schema).as_string()
    return [
        f"CREATE TABLE {s}.messages ("
        " channel_id uuid NOT NULL, seq bigint NOT NULL, message_id uuid NOT NULL UNIQUE,"
        " author_id uuid NOT NULL, text text, reply_to uuid,"
        " sent_at timestamptz NOT NULL, edited_at timestamptz,"
        " deleted boolean NOT NULL DEFAULT false, erased boolean NOT NULL DEFAULT false,"
        " stream_version bigint NOT NULL, PRIMARY KEY (channel_id, seq))",
        f"CREATE INDEX ON {s}.messages (author_id)",  # a forgotten author's rows
        f"CREATE TABLE {s}.reactions ("
        " message_id uuid NOT NULL, user_id uuid NOT NULL, emoji text NOT NULL,"
        " reacted_at timestamptz NOT NULL, PRIMARY KEY (message_id, user_id, emoji))",
    ]


@dataclass(frozen=True)
class _Statements:
    sent: Bulk
    edited: sql.Composed
    deleted: sql.Composed
    reacted: sql.Composed
    unreacted: sql.Composed
    forgotten: sql.Composed


@functools.cache
def _statements(schema: str) -> _Statements:
    def q(text: str) -> sql.Composed:
        return sql.SQL(text).format(s=sql.Identifier(schema))

    # claims the message row for this event: nothing when it has seen this version
    claim = (
        "UPDATE {s}.messages SET stream_version = %(v)s WHERE channel_id = %(c)s::uuid"
        " AND seq = %(seq)s AND stream_version < %(v)s AND NOT deleted RETURNING message_id"
    )
    return _Statements(
        sent=Bulk(
            q(
                "INSERT INTO {s}.messages (channel_id, seq, message_id, author_id, text, reply_to,"
                " sent_at, stream_version, erased) SELECT * FROM "
                + unnest(
                    "uuid",
                    "bigint",
                    "uuid",
                    "uuid",
                    "text",
                    "uuid",
                    "timestamptz",
                    "bigint",
                    "boolean",
                )
                + " ON CONFLICT DO NOTHING"
            )
        ),
        edited=q(
            "UPDATE {s}.messages SET text = %(text)s, erased = %(erased)s, edited_at = %(at)s,"
            " stream_version = %(v)s"
            " WHERE channel_id = %(c)s::uuid AND seq = %(seq)s AND stream_version < %(v)s"
            " AND NOT deleted"
        ),
        deleted=q(
            "WITH m AS (UPDATE {s}.messages SET text = NULL, deleted = true,"
            " stream_version = %(v)s WHERE channel_id = %(c)s::uuid AND seq = %(seq)s"
            " AND stream_version < %(v)s RETURNING message_id)"
            " DELETE FROM {s}.reactions r USING m WHERE r.message_id = m.message_id"
        ),
        reacted=q(
            "WITH m AS (" + claim + ")"
            " INSERT INTO {s}.reactions (message_id, user_id, emoji, reacted_at)"
            " SELECT message_id, %(u)s::uuid, %(emoji)s, %(at)s FROM m ON CONFLICT DO NOTHING"
        ),
        unreacted=q(
            "WITH m AS (" + claim + ")"
            " DELETE FROM {s}.reactions r USING m WHERE r.message_id = m.message_id"
            " AND r.user_id = %(u)s::uuid AND r.emoji = %(emoji)s"
        ),
        forgotten=q(
            "UPDATE {s}.messages SET text = NULL, erased = true"
            " WHERE author_id = %(u)s::uuid AND NOT erased"
        ),
    )


async def apply(conn: Statements, schema: str, events: Sequence[Envelope]) -> None:
    """Messages and reactions change in event order, runs of one kind in one executemany."""
    statements = _statements(schema)
    runs = Runs(conn)
    for envelope in events:
        event = decode(envelope.type, envelope.schema_version, envelope.data)
        change = _change(statements, event, envelope.stream_version)
        if change is not None:
            await runs.add(*change)
    await runs.flush()


def _change(
    statements: _Statements, event: Event, v: int
) -> tuple[sql.Composed | Bulk, Any] | None:
    """The statement and row for one event (None: not ours)."""
    match event:
        case MessageSent():
            text = erased(event.text)
            return statements.sent, (
                event.channel_id, event.seq, event.message_id, event.author_id, text,
                event.reply_to, event.sent_at, v, text is None,
            )  # fmt: skip
        case MessageEdited():
            text = erased(event.text)
            return statements.edited, {
                "c": event.channel_id, "seq": event.seq, "v": v, "text": text,
                "erased": text is None, "at": event.edited_at,
            }  # fmt: skip
        case MessageDeleted():
            return statements.deleted, {"c": event.channel_id, "seq": event.seq, "v": v}
        case ReactionAdded():
            return statements.reacted, {
                "c": event.channel_id, "seq": event.seq, "v": v, "u": event.user_id,
                "emoji": event.emoji, "at": event.reacted_at,
            }  # fmt: skip
        case ReactionRemoved():
            return statements.unreacted, {
                "c": event.channel_id, "seq": event.seq, "v": v, "u": event.user_id,
                "emoji": event.emoji,
            }  # fmt: skip
        case UserForgotten():
            return statements.forgotten, {"u": event.user_id}
        case _:
            return None
