"""A channel's messages, in channel order (`seq` ascending), a page at a time.

Paging is by seq. `after=N`: the oldest `limit` messages after N. `before=N`: the `limit`
messages just before N. Both: the oldest `limit` strictly between them. Neither: the newest
`limit`. Every page is in ascending order; `next_cursor` continues in the page's direction
(newer after `after`, older otherwise) and is null when there is nothing more that way.
A cursor replaces `before`/`after`; it cannot be combined with them.

In direct channels each message has a `status`, how far its recipient (the member who is
not its author) has got: `read`, `delivered` or `sent`. For the caller's own messages that
is the other member's receipts; for the other member's messages, the caller's own.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from psycopg import AsyncConnection

from infra.auth import Principal
from infra.authz import Action
from infra.http import Problem
from read_api.channels import ONE_SQL, readable_row
from read_api.consistency import fresh_enough
from read_api.paging import DEFAULT_LIMIT, Limit, decode_cursor, encode_cursor
from read_api.services import Services
from read_api.views import parse_id, text_id, utc

END = 2**62  # above every seq: "no upper bound"
Seq = Annotated[int | None, QueryParameter(ge=0, le=END, description="a message seq")]
CursorSeq = Annotated[int, msgspec.Meta(ge=0, le=END)]
_COLUMNS = "seq, message_id, author_id, text, reply_to, sent_at, edited_at, deleted, erased"
_FORWARD = (
    f"SELECT {_COLUMNS} FROM rm_messages.messages WHERE channel_id = %s AND seq > %s AND seq < %s"
    " ORDER BY seq LIMIT %s"
)
_BACKWARD = (
    f"SELECT {_COLUMNS} FROM rm_messages.messages WHERE channel_id = %s AND seq > %s AND seq < %s"
    " ORDER BY seq DESC LIMIT %s"
)
# The reactions of the page the query beside it reads (the same window, order and limit),
# so both go in one round trip.
_REACTIONS = (
    "SELECT message_id, emoji, count(*), bool_or(user_id = %s), min(reacted_at) AS first"
    " FROM rm_messages.reactions WHERE message_id IN (SELECT message_id FROM"
    " rm_messages.messages WHERE channel_id = %s AND seq > %s AND seq < %s ORDER BY seq {}"
    " LIMIT %s) GROUP BY message_id, emoji ORDER BY message_id, first, emoji"
)
_REACTIONS_FORWARD = _REACTIONS.format("")
_REACTIONS_BACKWARD = _REACTIONS.format("DESC")
_RECEIPTS = (
    "SELECT user_id, last_read_seq, last_delivered_seq FROM rm_channels.members"
    " WHERE channel_id = %s"
)

Direction = Literal["after", "before"]


@get(
    "/v1/channels/{channel_id:str}/messages",
    tags=["channels"],
    summary="A channel's messages in seq order",
    opt={"action": Action.READ_CHANNEL},
)
async def list_messages(
    request: Request[Any, Any, Any],
    channel_id: FromPath[str],
    services: NamedDependency[Services],
    principal: NamedDependency[Principal],
    before: Seq = None,
    after: Seq = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: FromQuery[str | None] = None,
) -> Response[dict[str, Any]]:
    """`{items, next_cursor}`; items `{message_id, seq, author_id, text, reply_to, sent_at,
    edited_at, deleted, erased, reactions: [{emoji, count, me}], status?}`, `text` absent
    when deleted or erased (its author was forgotten)."""
    headers = await fresh_enough(request, services, ["channels", "messages"])
    direction, low, high = _window(before, after, cursor)
    cid = parse_id(channel_id)
    if cid is None:
        raise Problem(404, "channel_not_found", "no such channel", headers=headers)
    forward = direction == "after"
    me = uuid.UUID(principal.user_id)
    async with services.pool.connection() as conn:
        # One round trip for all three: the page is dropped unless the channel is readable.
        async with conn.pipeline():
            channel = await conn.execute(ONE_SQL, (me, cid), prepare=True)
            page = await conn.execute(_FORWARD if forward else _BACKWARD,
                                      (cid, low, high, limit + 1), prepare=True)  # fmt: skip
            reacted = await conn.execute(_REACTIONS_FORWARD if forward else _REACTIONS_BACKWARD,
                                         (me, cid, low, high, limit), prepare=True)  # fmt: skip
        found = readable_row(await channel.fetchone(), principal, headers)
        rows = await page.fetchall()
        more = len(rows) > limit
        rows = rows[:limit] if forward else rows[:limit][::-1]
        reactions = _reactions(await reacted.fetchall())
        recipients = await _receipts(conn, cid) if found.channel.kind == "direct" else None
    items = []
    for seq, message_id, author_id, text, reply_to, sent_at, edited_at, deleted, erased in rows:
        item: dict[str, Any] = {
            "message_id": str(message_id),
            "seq": seq,
            "author_id": str(author_id),
            "reply_to": text_id(reply_to),
            "sent_at": utc(sent_at),
            "edited_at": utc(edited_at),
            "deleted": deleted,
            "erased": erased,
            "reactions": reactions.get(message_id, []),
        }
        if not deleted and not erased:
            item["text"] = text
        if recipients is not None:
            item["status"] = _status(seq, author_id, recipients)
        items.append(item)
    next_cursor = None
    if more and rows:
        if direction == "after":
            next_cursor = encode_cursor(("after", rows[-1][0], high))
        else:
            next_cursor = encode_cursor(("before", low, rows[0][0]))
    return Response({"items": items, "next_cursor": next_cursor}, headers=headers)


def _window(
    before: int | None, after: int | None, cursor: str | None
) -> tuple[Direction, int, int]:
    """Which way to read, and the open interval (low, high) of seqs to read from."""
    if cursor is not None:
        if before is not None or after is not None:
            raise Problem(400, "validation_failed", "a cursor cannot be combined with before/after",
                          errors=[{"field": "cursor", "message": "drop before and after"}])  # fmt: skip
        direction, low, high = decode_cursor(cursor, tuple[Direction, CursorSeq, CursorSeq])
        return direction, low, high
    low, high = after or 0, END if before is None else before
    return ("after" if after is not None else "before"), low, high


def _reactions(rows: list[tuple[Any, ...]]) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """Per message, its reactions: each emoji once with its count and whether the caller
    is among them, in the order the emojis were first used."""
    out: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for message_id, emoji, count, mine, _ in rows:
        out.setdefault(message_id, []).append({"emoji": emoji, "count": count, "me": mine})
    return out


async def _receipts(
    conn: AsyncConnection[Any], channel_id: uuid.UUID
) -> dict[uuid.UUID, tuple[int, int]]:
    """The members' (read, delivered) seqs."""
    cur = await conn.execute(_RECEIPTS, (channel_id,), prepare=True)
    return {user_id: (read, delivered) for user_id, read, delivered in await cur.fetchall()}


def _status(seq: int, author_id: uuid.UUID, members: dict[uuid.UUID, tuple[int, int]]) -> str:
    """How far the recipient has got with message `seq`; `sent` when nobody else is in."""
    read, delivered = max(
        (seqs for user_id, seqs in members.items() if user_id != author_id), default=(0, 0)
    )
    if seq <= read:
        return "read"
    return "delivered" if seq <= delivered else "sent"
