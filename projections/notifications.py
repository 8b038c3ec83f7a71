"""The notifications read model: what each user should hear about, newest first.

Chat makes three kinds: `invited` (for the invitee), `mentioned` (for each member a
message's `@username`s named) and `reply` (for the author of the message answered). A user
both mentioned in and replied to by one message gets one notification, `reply`: the more
specific of the two. Nobody is notified of their own messages.

A mention or reply becomes read when its user has read the channel up to its seq (a read
receipt, or sending a later message there); an invite, when the invitee joins.

Ids are derived from the event (`<event_id>:<kind>:<user_id>`), so a replayed batch inserts
nothing new. Marking read only goes one way, and only reaches what came before the event
that marks (mentions up to the receipt's seq, invites older than the join in the channel's
stream), so a replayed join cannot read an invite that came after it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from events.channel import MemberInvited, MemberJoined, MessageSent, MessagesRead
from events.envelope import Envelope
from events.registry import decode
from projections.batching import Runs

name = "notifications"
version = 1
types = frozenset({"MemberInvited", "MemberJoined", "MessageSent", "MessagesRead"})


def ddl(schema: str) -> list[str]:
    """One row per notification, indexed for "mine, newest first" and for marking read."""
    s = sql.Identifier(schema).as_string()
    return [
        f"CREATE TABLE {s}.notifications ("
        " notification_id text PRIMARY KEY, user_id uuid NOT NULL, kind text NOT NULL,"
        " channel_id uuid, message_id uuid, seq bigint, actor_id uuid,"
        " created_at timestamptz NOT NULL, read boolean NOT NULL DEFAULT false,"
        # the version, in its channel's stream, of the event that made it: a join reads
        # only the invites before it, also when a batch is applied again
        " stream_version bigint)",
        f"CREATE INDEX ON {s}.notifications (user_id, created_at DESC, notification_id DESC)",
        f"CREATE INDEX ON {s}.notifications (user_id, channel_id) WHERE NOT read",
    ]


@dataclass(frozen=True)
class _Statements:
    insert: sql.Composed
    read_upto: sql.Composed
    joined: sql.Composed


@functools.cache
def _statements(schema: str) -> _Statements:
    def q(text: str) -> sql.Composed:
        return sql.SQL(text).format(s=sql.Identifier(schema))

    return _Statements(
        insert=q(
            "INSERT INTO {s}.notifications (notification_id, user_id, kind, channel_id,"
            " message_id, seq, actor_id, created_at, stream_version)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (notification_id) DO NOTHING"
        ),
        read_upto=q(
            "UPDATE {s}.notifications SET read = true WHERE user_id = %s AND channel_id = %s"
            " AND seq <= %s AND NOT read"
        ),
        joined=q(
            "UPDATE {s}.notifications SET read = true WHERE user_id = %s AND channel_id = %s"
            " AND kind = 'invited' AND NOT read AND stream_version < %s"
        ),
    )


async def apply(
    conn: psycopg.AsyncConnection[Any], schema: str, events: Sequence[Envelope]
) -> None:
    """New notifications in event order; reading marks them read. Reads are folded to one
    update per user and channel at the end of the batch: a message sent after a receipt
    has a higher seq than it, so no notification inserted later is one it should mark."""
    statements = _statements(schema)
    runs = Runs(conn)
    read_upto: dict[tuple[str, str], int] = {}
    for envelope in events:
        event = decode(envelope.type, envelope.schema_version, envelope.data)
        match event:
            case MessageSent():
                for row in _message_rows(envelope, event):
                    await runs.add(statements.insert, row)
                key = (event.author_id, event.channel_id)
                read_upto[key] = max(read_upto.get(key, 0), event.seq)
            case MessagesRead():
                key = (event.user_id, event.channel_id)
                read_upto[key] = max(read_upto.get(key, 0), event.seq)
            case MemberInvited():
                await runs.add(statements.insert, (
                    f"{envelope.event_id}:invited:{event.user_id}", event.user_id, "invited",
                    event.channel_id, None, None, event.invited_by, event.invited_at,
                    envelope.stream_version,
                ))  # fmt: skip
            case MemberJoined():
                await runs.add(
                    statements.joined, (event.user_id, event.channel_id, envelope.stream_version)
                )
    for (user_id, channel_id), seq in read_upto.items():
        await runs.add(statements.read_upto, (user_id, channel_id, seq))
    await runs.flush()


def _message_rows(envelope: Envelope, event: MessageSent) -> list[tuple[Any, ...]]:
    """The notification rows a message makes: a reply for the author answered, a mention
    for every other member named (never for the message's own author)."""
    kinds: dict[str, str] = {}
    for user_id in event.mentions:
        kinds[user_id] = "mentioned"
    if event.reply_to_author_id is not None:
        kinds[event.reply_to_author_id] = "reply"
    kinds.pop(event.author_id, None)
    return [
        (f"{envelope.event_id}:{kind}:{user_id}", user_id, kind, event.channel_id,
         event.message_id, event.seq, event.author_id, event.sent_at, envelope.stream_version)
        for user_id, kind in kinds.items()
    ]  # fmt: skip
