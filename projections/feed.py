"""The feed read model: what the WebSocket gateway sends, as numbered frames per topic.

Each event a client may watch becomes a frame on its topic: `channel:<id>`, `auction:<id>`
or `me:<user_id>` (the user's notifications). A topic's frames are numbered 1, 2, 3, ...
(`seq`) in the order the log gives them, so a client resumes with `after_seq` from this
table and the gateway tails it by `position`. Frames hold client views only: never a
password hash, a token or anybody's private data. A frame carrying someone's personal data
(a message's text) names them as its `subject`, so forgetting them erases it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from psycopg import sql

from events.auction import (
    AuctionBoughtNow,
    AuctionCancelled,
    AuctionClosed,
    AuctionExtended,
    AuctionOpened,
    BidPlaced,
)
from events.channel import (
    ChannelDeleted,
    MemberJoined,
    MemberLeft,
    MessageDeleted,
    MessageEdited,
    MessagesDelivered,
    MessageSent,
    MessagesRead,
    ReactionAdded,
    ReactionRemoved,
)
from events.envelope import METADATA_VIEW, Envelope, Position, traced
from events.personal import erased
from events.registry import Event, decode
from events.user import UserForgotten
from infra.pipeline import Statements
from projections import notifications
from projections.batching import Bulk, unnest

name = "feed"
version = 3  # 2: frames carry the causing request's traceparent, 3: subjects (erasure)
types = frozenset(
    {"MemberJoined", "MemberLeft", "MemberInvited", "ChannelDeleted", "MessageSent",
     "MessageEdited", "MessageDeleted", "ReactionAdded", "ReactionRemoved", "MessagesRead",
     "MessagesDelivered", "AuctionOpened", "BidPlaced", "AuctionExtended", "AuctionCancelled",
     "AuctionClosed", "UserForgotten"}
)  # fmt: skip
_ENCODER = msgspec.json.Encoder()

# Where a batch's frames are announced as it commits: the gateways' live path, which then
# needs no query of its own (read_api.gateway.feed). A notice is JSON: `after` and `upto`,
# the batch's span of the log, and `frames`, every frame in that span as
# [topic, seq, position, name, data, event_id, traceparent] in log order; without `frames`
# when they would not fit in a notification (PostgreSQL refuses 8000 bytes or more).
FRAMES_CHANNEL: Final = "hubbub_frames"
NOTICE_MAX_BYTES: Final = 7900
NOTICE_MAX_EVENTS: Final = 100  # a frame takes 150 bytes or more: more would not fit


# (topic, frame name, client view)
Frame = tuple[str, str, dict[str, Any]]


def ddl(schema: str) -> list[str]:
    """Frames keyed by (topic, seq), found by position for tailing; each topic's last seq.
    A frame keeps the W3C traceparent of the request that caused its event, if any, so the
    gateway can log it."""
    s = sql.Identifier(schema).as_string()
    return [
        f"CREATE TABLE {s}.frames ("
        " topic text NOT NULL, seq bigint NOT NULL, position text NOT NULL,"
        " event_id uuid NOT NULL, name text NOT NULL, data json NOT NULL, traceparent text,"
        " subject uuid, PRIMARY KEY (topic, seq), UNIQUE (event_id, topic, name))",
        f"CREATE INDEX frames_by_position ON {s}.frames (position)",
        f"CREATE INDEX frames_by_subject ON {s}.frames (subject) WHERE subject IS NOT NULL",
        f"CREATE TABLE {s}.topics (topic text PRIMARY KEY, seq bigint NOT NULL)",
    ]


def channel_topic(channel_id: str) -> str:
    return f"channel:{channel_id}"


def auction_topic(auction_id: str) -> str:
    return f"auction:{auction_id}"


def me_topic(user_id: str) -> str:
    return f"me:{user_id}"


def _channel(event: Event) -> Iterator[Frame]:
    match event:
        case MessageSent():
            yield channel_topic(event.channel_id), "message.sent", {
                "channel_id": event.channel_id, "message_id": event.message_id, "seq": event.seq,
                "author_id": event.author_id, **_text(event.text), "reply_to": event.reply_to,
                "sent_at": event.sent_at,
            }  # fmt: skip
        case MessageEdited():
            yield channel_topic(event.channel_id), "message.edited", {
                "channel_id": event.channel_id, "message_id": event.message_id, "seq": event.seq,
                **_text(event.text), "edited_at": event.edited_at,
            }  # fmt: skip
        case MessageDeleted():
            yield channel_topic(event.channel_id), "message.deleted", {
                "channel_id": event.channel_id, "message_id": event.message_id, "seq": event.seq,
                "deleted_by": event.deleted_by,
            }  # fmt: skip
        case ReactionAdded() | ReactionRemoved():
            kind = "reaction.added" if isinstance(event, ReactionAdded) else "reaction.removed"
            yield channel_topic(event.channel_id), kind, {
                "channel_id": event.channel_id, "message_id": event.message_id, "seq": event.seq,
                "user_id": event.user_id, "emoji": event.emoji,
            }  # fmt: skip
        case MessagesRead() | MessagesDelivered():
            kind = "receipt.read" if isinstance(event, MessagesRead) else "receipt.delivered"
            yield channel_topic(event.channel_id), kind, {
                "channel_id": event.channel_id, "user_id": event.user_id,
                "message_id": event.message_id, "seq": event.seq,
            }  # fmt: skip
        case MemberJoined():
            yield channel_topic(event.channel_id), "member.joined", {
                "channel_id": event.channel_id, "user_id": event.user_id, "role": event.role,
                "joined_at": event.joined_at,
            }  # fmt: skip
        case MemberLeft():
            yield channel_topic(event.channel_id), "member.left", {
                "channel_id": event.channel_id, "user_id": event.user_id,
            }  # fmt: skip
        case ChannelDeleted():
            yield (
                channel_topic(event.channel_id),
                "channel.deleted",
                {"channel_id": event.channel_id},
            )
        case _:
            return


def _text(text: str) -> dict[str, Any]:
    """A message's text in a view: `erased` says whether its author was forgotten."""
    kept = erased(text)
    return {"text": kept, "erased": kept is None}


def subject_of(envelope: Envelope, event: Event) -> str | None:
    """Whose personal data the event's frames carry: a message's author (an edit's is its
    actor, as only authors edit)."""
    match event:
        case MessageSent():
            return event.author_id
        case MessageEdited():
            return METADATA_VIEW.decode(envelope.metadata).actor_id
        case _:
            return None


def _auction(event: Event) -> Iterator[Frame]:
    match event:
        case AuctionOpened():
            yield auction_topic(event.auction_id), "auction.opened", {
                "auction_id": event.auction_id, "currency": event.currency,
                "starting_price": event.starting_price, "min_increment": event.min_increment,
                "ends_at": event.ends_at,
            }  # fmt: skip
        case BidPlaced():
            yield auction_topic(event.auction_id), "bid.placed", {
                "auction_id": event.auction_id, "bid_id": event.bid_id,
                "bidder_id": event.bidder_id, "amount": event.amount, "currency": event.currency,
                "placed_at": event.placed_at,
            }  # fmt: skip
        case AuctionExtended():
            yield auction_topic(event.auction_id), "auction.extended", {
                "auction_id": event.auction_id, "ends_at": event.ends_at,
            }  # fmt: skip
        case AuctionCancelled():
            yield (
                auction_topic(event.auction_id),
                "auction.cancelled",
                {"auction_id": event.auction_id},
            )
        case AuctionClosed():
            yield auction_topic(event.auction_id), "auction.closed", {
                "auction_id": event.auction_id, "sold": event.sold, "reason": event.reason,
                "winner_id": event.winner_id, "price": event.price, "currency": event.currency,
            }  # fmt: skip
        case AuctionBoughtNow():
            return  # the AuctionClosed that follows says it
        case _:
            return


def traceparent_of(envelope: Envelope) -> str | None:
    """The traceparent in the event's metadata; most events have none, and cost one
    substring test."""
    trace = traced(bytes(envelope.metadata))
    return trace.traceparent if trace is not None else None


def frames_of(envelope: Envelope, event: Event) -> list[Frame]:
    """The frames one event makes, on every topic it concerns."""
    out = [*_channel(event), *_auction(event)]
    for notification in notifications.of(envelope, event):
        out.append((me_topic(notification["user_id"]), "notification", notification))
    return out


@dataclass(frozen=True)
class _Statements:
    insert: Bulk
    forgotten: sql.Composed
    notice: sql.Composed


@functools.cache
def _statements(schema: str) -> _Statements:
    """The feed's statements for one schema, composed once (not every batch)."""

    def q(text: str) -> sql.Composed:
        return sql.SQL(text).format(s=sql.Identifier(schema))

    return _Statements(
        # A batch's frames in one statement: each topic's new frames are numbered after its
        # last seq, in the batch's order; a frame already stored (same event, topic and
        # name) is skipped and takes no number; the topics' last seqs move to the greatest
        # inserted. One execution and no round trip for the numbers: reading them first
        # cost the batch's transaction a sync of its own.
        insert=Bulk(q(
            "WITH f AS (SELECT * FROM " + unnest("text", "text", "uuid", "text", "json", "text", "uuid")
            + " WITH ORDINALITY AS f(topic, position, event_id, name, data, traceparent, subject, ord)"
            " WHERE NOT EXISTS (SELECT 1 FROM {s}.frames s WHERE s.event_id = f.event_id"
            " AND s.topic = f.topic AND s.name = f.name)),"
            " numbered AS (SELECT f.*, coalesce((SELECT t.seq FROM {s}.topics t WHERE t.topic = f.topic), 0)"
            " + row_number() OVER (PARTITION BY f.topic ORDER BY f.ord) AS seq FROM f),"
            " ins AS (INSERT INTO {s}.frames (topic, seq, position, event_id, name, data, traceparent,"
            " subject) SELECT topic, seq, position, event_id, name, data, traceparent, subject"
            " FROM numbered ORDER BY ord RETURNING topic, seq)"
            " INSERT INTO {s}.topics (topic, seq) SELECT topic, max(seq) FROM ins GROUP BY topic"
            " ON CONFLICT (topic) DO UPDATE SET seq = excluded.seq"
        )),
        forgotten=q("UPDATE {s}.frames SET data = (data::jsonb || '{{\"text\": null,"
                    " \"erased\": true}}')::json, subject = NULL WHERE subject = %s"),
        # The frames the gateway's tail would read for the span (FeedReader.between), read
        # once here for every gateway; the span alone when they are too many to notify.
        notice=q(
            "SELECT pg_notify(%s, CASE WHEN octet_length(n) < %s THEN n"
            " ELSE json_build_object('after', %s::text, 'upto', %s::text)::text END)"
            " FROM (SELECT json_build_object('after', %s::text, 'upto', %s::text, 'frames',"
            " coalesce(json_agg(json_build_array(topic, seq, position, name, data, event_id,"
            " traceparent) ORDER BY position, topic, seq), '[]'))::text AS n"
            " FROM {s}.frames WHERE position > %s AND position <= %s) AS notice"
        ),
    )  # fmt: skip


async def announce(
    conn: Statements, schema: str, after: Position, upto: Position, events: int
) -> None:
    """Queue the notice of the frames between `after` and `upto` (the batch's span of
    `events` events, after its rows): sent at the commit, and only if the batch commits.
    A batch of more than NOTICE_MAX_EVENTS (a catch-up's) is not announced: its frames
    would not fit, and reading them back would be work for nothing."""
    if events > NOTICE_MAX_EVENTS:
        return
    span = (after.token(), upto.token())
    await conn.execute(
        _statements(schema).notice, (FRAMES_CHANNEL, NOTICE_MAX_BYTES, *span, *span, *span)
    )


async def apply(conn: Statements, schema: str, events: Sequence[Envelope]) -> None:
    """Number each topic's new frames after its last one; a frame already stored (same
    event, topic and name) is not stored again."""
    statements = _statements(schema)
    made: list[tuple[str, str, Envelope, dict[str, Any], str | None]] = []
    forgotten: list[str] = []
    for envelope in events:
        event = decode(envelope.type, envelope.schema_version, envelope.data)
        if isinstance(event, UserForgotten):
            forgotten.append(event.user_id)
            continue
        subject = subject_of(envelope, event)
        made.extend(
            (topic, kind, envelope, view, subject)
            for topic, kind, view in frames_of(envelope, event)
        )
    if made:
        await _insert(conn, statements, made)
    for user_id in forgotten:  # after the batch's frames: no frame of theirs comes later
        await conn.execute(statements.forgotten, (user_id,))


async def _insert(
    conn: Statements,
    statements: _Statements,
    made: list[tuple[str, str, Envelope, dict[str, Any], str | None]],
) -> None:
    await statements.insert.run(conn, [
        (topic, envelope.position, envelope.event_id, kind, _ENCODER.encode(view).decode(),
         traceparent_of(envelope), subject)
        for topic, kind, envelope, view, subject in made
    ])  # fmt: skip
