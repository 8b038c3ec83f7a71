"""The notifications read model: what each user should hear about, newest first.

Chat makes three kinds: `invited` (for the invitee), `mentioned` (for each member a
message's `@username`s named) and `reply` (for the author of the message answered). A user
both mentioned in and replied to by one message gets one notification, `reply`: the more
specific of the two. Nobody is notified of their own messages. Auctions make `outbid` (for
the leader a bid displaced), `won` (for the winner), `sold` and `ended` (for the seller,
sold or ended without sale).

`of` is the one definition of who hears of what: the WebSocket feed sends the same
notifications live.

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

from psycopg import sql

from events.auction import AuctionClosed, BidPlaced
from events.channel import MemberInvited, MemberJoined, MessageSent, MessagesRead
from events.envelope import Envelope
from events.registry import Event, decode
from infra.pipeline import Statements
from projections.batching import Bulk, Runs, unnest

name = "notifications"
version = 3  # 2: auctions, 3: the currency of amounts
types = frozenset(
    {"MemberInvited", "MemberJoined", "MessageSent", "MessagesRead", "BidPlaced", "AuctionClosed"}
)
_COLUMNS = ("notification_id", "user_id", "kind", "channel_id", "message_id", "seq",
            "auction_id", "amount", "currency", "actor_id", "created_at")  # fmt: skip


def ddl(schema: str) -> list[str]:
    """One row per notification, indexed for "mine, newest first" and for marking read."""
    s = sql.Identifier(schema).as_string()
    return [
        f"CREATE TABLE {s}.notifications ("
        " notification_id text PRIMARY KEY, user_id uuid NOT NULL, kind text NOT NULL,"
        " channel_id uuid, message_id uuid, seq bigint, auction_id uuid, amount bigint, currency text,"
        " actor_id uuid,"
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
    read_upto: Bulk
    joined: sql.Composed


@functools.cache
def _statements(schema: str) -> _Statements:
    def q(text: str) -> sql.Composed:
        return sql.SQL(text).format(s=sql.Identifier(schema))

    return _Statements(
        insert=q(
            "INSERT INTO {s}.notifications (" + ", ".join(_COLUMNS) + ", stream_version)"
            " VALUES (" + ", ".join(f"%({c})s" for c in (*_COLUMNS, "stream_version")) + ")"
            " ON CONFLICT (notification_id) DO NOTHING"
        ),
        read_upto=Bulk(
            q(
                "UPDATE {s}.notifications n SET read = true FROM "
                + unnest("uuid", "uuid", "bigint")
                + " AS r(user_id, channel_id, seq)"
                " WHERE n.user_id = r.user_id AND n.channel_id = r.channel_id AND n.seq <= r.seq"
                " AND NOT n.read"
            )
        ),
        joined=q(
            "UPDATE {s}.notifications SET read = true WHERE user_id = %s AND channel_id = %s"
            " AND kind = 'invited' AND NOT read AND stream_version < %s"
        ),
    )


async def apply(conn: Statements, schema: str, events: Sequence[Envelope]) -> None:
    """New notifications in event order; reading marks them read. Reads are folded to one
    update per user and channel at the end of the batch: a message sent after a receipt
    has a higher seq than it, so no notification inserted later is one it should mark."""
    statements = _statements(schema)
    runs = Runs(conn)
    read_upto: dict[tuple[str, str], int] = {}
    for envelope in events:
        event = decode(envelope.type, envelope.schema_version, envelope.data)
        for notification in of(envelope, event):
            await runs.add(
                statements.insert, {**notification, "stream_version": envelope.stream_version}
            )
        match event:
            case MessageSent():
                key = (event.author_id, event.channel_id)
                read_upto[key] = max(read_upto.get(key, 0), event.seq)
            case MessagesRead():
                key = (event.user_id, event.channel_id)
                read_upto[key] = max(read_upto.get(key, 0), event.seq)
            case MemberJoined():
                await runs.add(
                    statements.joined, (event.user_id, event.channel_id, envelope.stream_version)
                )
    for (user_id, channel_id), seq in read_upto.items():
        await runs.add(statements.read_upto, (user_id, channel_id, seq))
    await runs.flush()


def _notification(envelope: Envelope, kind: str, user_id: str, **fields: Any) -> dict[str, Any]:
    return {**dict.fromkeys(_COLUMNS), **fields, "user_id": user_id, "kind": kind,
            "notification_id": f"{envelope.event_id}:{kind}:{user_id}"}  # fmt: skip


def of(envelope: Envelope, event: Event) -> list[dict[str, Any]]:
    """The notifications one event makes (client views: nothing private)."""
    match event:
        case MessageSent():
            kinds: dict[str, str] = dict.fromkeys(event.mentions, "mentioned")
            if event.reply_to_author_id is not None:
                kinds[event.reply_to_author_id] = "reply"
            kinds.pop(event.author_id, None)
            return [
                _notification(envelope, kind, user_id, channel_id=event.channel_id,
                              message_id=event.message_id, seq=event.seq,
                              actor_id=event.author_id, created_at=event.sent_at)
                for user_id, kind in kinds.items()
            ]  # fmt: skip
        case MemberInvited():
            return [_notification(envelope, "invited", event.user_id, channel_id=event.channel_id,
                                  actor_id=event.invited_by, created_at=event.invited_at)]  # fmt: skip
        case BidPlaced() if event.outbid_id is not None:
            return [_notification(envelope, "outbid", event.outbid_id, auction_id=event.auction_id,
                                  amount=event.amount, currency=event.currency, actor_id=event.bidder_id,
                                  created_at=event.placed_at)]  # fmt: skip
        case AuctionClosed() if event.sold and event.winner_id is not None:
            common = dict(auction_id=event.auction_id, amount=event.price, currency=event.currency,
                          created_at=event.closed_at)  # fmt: skip
            return [_notification(envelope, "won", event.winner_id, actor_id=event.seller_id, **common),
                    _notification(envelope, "sold", event.seller_id, actor_id=event.winner_id, **common)]  # fmt: skip
        case AuctionClosed():
            return [_notification(envelope, "ended", event.seller_id, auction_id=event.auction_id,
                                  created_at=event.closed_at)]  # fmt: skip
        case _:
            return []
