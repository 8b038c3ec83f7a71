"""The channels read model: channels, their members (with read and delivery receipts) and
pending invites. Password hashes are never copied: only whether a channel has one.

Idempotence: a channel row remembers the highest stream version applied to its channel,
and every change that is not monotone (joins, leaves, invites, deletion) is guarded by it.
Message tips and receipts only ever move forward (GREATEST), so applying them twice is
harmless; within a batch they are folded to one update per channel and per member.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, assert_never

from psycopg import sql

from events.channel import (
    ChannelCreated,
    ChannelDeleted,
    MemberInvited,
    MemberJoined,
    MemberLeft,
    MessagesDelivered,
    MessageSent,
    MessagesRead,
)
from events.envelope import Envelope
from events.registry import Event, decode
from infra.pipeline import Statements
from projections.batching import Bulk, Runs, unnest

name = "channels"
version = 1
types = frozenset(
    {
        "ChannelCreated",
        "MemberJoined",
        "MemberInvited",
        "MemberLeft",
        "ChannelDeleted",
        "MessageSent",
        "MessagesRead",
        "MessagesDelivered",
    }
)


def ddl(schema: str) -> list[str]:
    """Channels, members (indexed by user for "my channels") and invites."""
    s = sql.Identifier(schema).as_string()
    return [
        f"CREATE TABLE {s}.channels ("
        " channel_id uuid PRIMARY KEY, kind text NOT NULL, name text, topic text,"
        " visibility text NOT NULL, owner_id uuid, has_password boolean NOT NULL,"
        " created_at timestamptz NOT NULL, member_count integer NOT NULL DEFAULT 0,"
        " last_message_at timestamptz, last_seq bigint NOT NULL DEFAULT 0,"
        " deleted boolean NOT NULL DEFAULT false, deleted_at timestamptz,"
        " stream_version bigint NOT NULL)",
        # the public directory, in name order
        f"CREATE INDEX ON {s}.channels (lower(name), channel_id)"
        " WHERE visibility = 'public' AND NOT deleted",
        f"CREATE TABLE {s}.members ("
        " channel_id uuid NOT NULL, user_id uuid NOT NULL, role text NOT NULL,"
        " joined_at timestamptz NOT NULL,"
        " last_read_seq bigint NOT NULL DEFAULT 0, last_delivered_seq bigint NOT NULL DEFAULT 0,"
        " PRIMARY KEY (channel_id, user_id))",
        f"CREATE INDEX ON {s}.members (user_id, channel_id)",
        f"CREATE INDEX ON {s}.members (channel_id, joined_at, user_id)",
        f"CREATE TABLE {s}.invites ("
        " channel_id uuid NOT NULL, user_id uuid NOT NULL, invited_by uuid NOT NULL,"
        " invited_at timestamptz NOT NULL, PRIMARY KEY (channel_id, user_id))",
    ]


@dataclass(frozen=True)
class _Statements:
    created: sql.Composed
    joined: sql.Composed
    invited: sql.Composed
    left: sql.Composed
    deleted: sql.Composed
    tip: Bulk
    receipts: Bulk


@functools.cache
def _statements(schema: str) -> _Statements:
    # Every CTE of a statement sees the rows as they were before it: the guard on
    # stream_version holds for all its parts, and the channel row is updated once.
    def q(text: str) -> sql.Composed:
        return sql.SQL(text).format(s=sql.Identifier(schema))

    fresh = "channel_id = %(c)s::uuid AND stream_version < %(v)s"
    return _Statements(
        created=q(
            "INSERT INTO {s}.channels (channel_id, kind, name, topic, visibility, owner_id,"
            " has_password, created_at, stream_version)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (channel_id) DO NOTHING"
        ),
        # A member joins with the channel's history read: what was said before they came
        # is there to scroll back to, not to count as unread.
        joined=q(
            "WITH ins AS (INSERT INTO {s}.members"
            " (channel_id, user_id, role, joined_at, last_read_seq, last_delivered_seq)"
            " SELECT channel_id, %(u)s::uuid, %(role)s, %(at)s, last_seq, last_seq"
            " FROM {s}.channels WHERE " + fresh + " ON CONFLICT DO NOTHING RETURNING 1),"
            " inv AS (DELETE FROM {s}.invites WHERE channel_id = %(c)s::uuid AND user_id = %(u)s::uuid"
            " AND EXISTS (SELECT 1 FROM {s}.channels WHERE " + fresh + "))"
            " UPDATE {s}.channels SET member_count = member_count + (SELECT count(*) FROM ins),"
            " stream_version = %(v)s WHERE " + fresh
        ),
        invited=q(
            "WITH ins AS (INSERT INTO {s}.invites (channel_id, user_id, invited_by, invited_at)"
            " SELECT channel_id, %(u)s::uuid, %(by)s::uuid, %(at)s FROM {s}.channels"
            " WHERE " + fresh + " ON CONFLICT DO NOTHING)"
            " UPDATE {s}.channels SET stream_version = %(v)s WHERE " + fresh
        ),
        left=q(
            "WITH gone AS (DELETE FROM {s}.members WHERE channel_id = %(c)s::uuid"
            " AND user_id = %(u)s::uuid"
            " AND EXISTS (SELECT 1 FROM {s}.channels WHERE " + fresh + ") RETURNING 1)"
            " UPDATE {s}.channels SET member_count = member_count - (SELECT count(*) FROM gone),"
            " stream_version = %(v)s WHERE " + fresh
        ),
        deleted=q(
            "UPDATE {s}.channels SET deleted = true, deleted_at = %(at)s, stream_version = %(v)s"
            " WHERE " + fresh
        ),
        # Tips and receipts only grow: rows for one channel or member fold to their
        # greatest, so a run that names one twice is still one update each.
        tip=Bulk(
            q(
                "UPDATE {s}.channels c SET last_seq = GREATEST(c.last_seq, r.seq),"
                " last_message_at = GREATEST(c.last_message_at, r.at),"
                " stream_version = GREATEST(c.stream_version, r.v)"
                " FROM (SELECT channel_id, max(seq) AS seq, max(at) AS at, max(v) AS v FROM "
                + unnest("bigint", "timestamptz", "bigint", "uuid")
                + " AS u(seq, at, v, channel_id) GROUP BY channel_id) r"
                " WHERE c.channel_id = r.channel_id"
            )
        ),
        receipts=Bulk(
            q(
                "UPDATE {s}.members m SET last_read_seq = GREATEST(m.last_read_seq, r.read),"
                " last_delivered_seq = GREATEST(m.last_delivered_seq, r.delivered)"
                " FROM (SELECT channel_id, user_id, max(read) AS read, max(delivered) AS delivered"
                " FROM "
                + unnest("bigint", "bigint", "uuid", "uuid")
                + " AS u(read, delivered, channel_id, user_id) GROUP BY channel_id, user_id) r"
                " WHERE m.channel_id = r.channel_id AND m.user_id = r.user_id"
            )
        ),
    )


@dataclass
class _Tips:
    """Monotone changes folded per channel and per member until something else comes."""

    # channel -> (last seq, last message time, stream version)
    channels: dict[str, tuple[int, datetime, int]] = field(default_factory=dict)
    # (channel, user) -> (read seq, delivered seq)
    members: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    def fold(self, event: MessageSent | MessagesRead | MessagesDelivered, version: int) -> None:
        """Remember a message's tip or a receipt."""
        match event:
            case MessageSent():
                seq, at, v = self.channels.get(event.channel_id, (0, event.sent_at, 0))
                self.channels[event.channel_id] = (
                    max(seq, event.seq), max(at, event.sent_at), max(v, version)
                )  # fmt: skip
                self.receipt(event.channel_id, event.author_id, read=event.seq)  # sending reads
            case MessagesRead():
                self.receipt(event.channel_id, event.user_id, read=event.seq)
            case MessagesDelivered():
                self.receipt(event.channel_id, event.user_id, delivered=event.seq)
            case _:
                assert_never(event)

    def receipt(self, channel_id: str, user_id: str, *, read: int = 0, delivered: int = 0) -> None:
        old_read, old_delivered = self.members.get((channel_id, user_id), (0, 0))
        new_read = max(old_read, read)
        self.members[(channel_id, user_id)] = (new_read, max(old_delivered, delivered, new_read))

    async def flush(self, runs: Runs, statements: _Statements) -> None:
        for channel_id, (seq, at, v) in self.channels.items():
            await runs.add(statements.tip, (seq, at, v, channel_id))
        for (channel_id, user_id), (read, delivered) in self.members.items():
            await runs.add(statements.receipts, (read, delivered, channel_id, user_id))
        self.channels.clear()
        self.members.clear()


async def apply(conn: Statements, schema: str, events: Sequence[Envelope]) -> None:
    """Channels and memberships change in event order; message tips and receipts are
    folded in between. Applying a batch twice changes nothing."""
    statements = _statements(schema)
    runs = Runs(conn)
    tips = _Tips()
    for envelope in events:
        event = decode(envelope.type, envelope.schema_version, envelope.data)
        if isinstance(event, MessageSent | MessagesRead | MessagesDelivered):
            tips.fold(event, envelope.stream_version)
            continue
        change = _change(statements, event, envelope.stream_version)
        if change is not None:
            await tips.flush(runs, statements)  # a join reads the channel's last seq
            await runs.add(*change)
    await tips.flush(runs, statements)
    await runs.flush()


def _change(statements: _Statements, event: Event, v: int) -> tuple[sql.Composed, Any] | None:
    """The statement and row for a change to channels or memberships (None: not ours)."""
    match event:
        case ChannelCreated():
            return statements.created, (
                event.channel_id, event.kind, event.name or None, event.topic, event.visibility,
                event.owner_id, event.password_hash is not None, event.created_at, v,
            )  # fmt: skip
        case MemberJoined():
            return statements.joined, {
                "c": event.channel_id, "v": v, "u": event.user_id, "role": event.role,
                "at": event.joined_at,
            }  # fmt: skip
        case MemberInvited():
            return statements.invited, {
                "c": event.channel_id, "v": v, "u": event.user_id, "by": event.invited_by,
                "at": event.invited_at,
            }  # fmt: skip
        case MemberLeft():
            return statements.left, {"c": event.channel_id, "v": v, "u": event.user_id}
        case ChannelDeleted():
            return statements.deleted, {"c": event.channel_id, "v": v, "at": event.deleted_at}
        case _:
            return None
