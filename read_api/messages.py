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
from litestar.params import FromPath, FromQuery, QueryParameter
from psycopg import AsyncConnection

from infra import authz
from infra.authz import Action
from infra.http import Answer, Problem
from read_api.channels import CHANNEL_WIDTH, ONE_SQL, readable_row
from read_api.consistency import fresh_enough
from read_api.paging import DEFAULT_LIMIT, Limit, decode_cursor, encode_cursor
from read_api.services import Services
from read_api.views import parse_id, text_id, utc

END = 2**62  # above every seq: "no upper bound"
Seq = Annotated[int | None, QueryParameter(ge=0, le=END, description="a message seq")]
CursorSeq = Annotated[int, msgspec.Meta(ge=0, le=END)]
# One statement answers a page: the channel row with the caller's membership (ONE_SQL's
# columns, zero rows when there is no such channel), then each message of the window
# beside it (NULLs when the window is empty), with its reactions as a JSON array: each
# emoji once with its count and whether the caller is among them, in the order the emojis
# were first used. One execution and no pipeline, where it was three statements in a
# pipeline: each cost a send and a poll here, and an execution on the server.
assert ONE_SQL.count("%s") == 2, "ONE_SQL's parameters are (caller, channel)"
_PAGE = (
    "SELECT c.*, p.*, (SELECT json_agg(json_build_object('emoji', emoji, 'count', n, 'me', mine)"
    " ORDER BY first, emoji) FROM (SELECT emoji, count(*) AS n, bool_or(user_id = %(me)s) AS mine,"
    " min(reacted_at) AS first FROM rm_messages.reactions r WHERE r.message_id = p.message_id"
    " GROUP BY emoji) x) FROM ("
    + ONE_SQL.replace("%s", "%(me)s", 1).replace("%s", "%(cid)s", 1)
    + ") c LEFT JOIN LATERAL (SELECT seq, message_id, author_id, text, reply_to, sent_at, edited_at,"
    " deleted, erased FROM rm_messages.messages WHERE channel_id = %(cid)s AND seq > %(low)s"
    " AND seq < %(high)s ORDER BY seq {0} LIMIT %(limit)s) p ON true ORDER BY p.seq {0}"
)
_PAGE_FORWARD = _PAGE.format("")
_PAGE_BACKWARD = _PAGE.format("DESC")
_NO_REACTIONS = msgspec.Raw(b"[]")
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
    before: Seq = None,
    after: Seq = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: FromQuery[str | None] = None,
) -> Response[dict[str, Any]]:
    """`{items, next_cursor}`; items `{message_id, seq, author_id, text, reply_to, sent_at,
    edited_at, deleted, erased, reactions: [{emoji, count, me}], status?}`, `text` absent
    when deleted or erased (its author was forgotten)."""
    # The busiest read takes its collaborators from the request, not as dependencies
    # (see write_api.messages.send_message).
    services = Services.of(request.app)
    principal = authz.principal(request, services)
    headers = await fresh_enough(request, services, ["channels", "messages"])
    direction, low, high = _window(before, after, cursor)
    cid = parse_id(channel_id)
    if cid is None:
        raise Problem(404, "channel_not_found", "no such channel", headers=headers)
    forward = direction == "after"
    params = {"me": uuid.UUID(principal.user_id), "cid": cid, "low": low, "high": high,
              "limit": limit + 1}  # fmt: skip
    async with services.pool.connection() as conn:
        cur = await conn.execute(_PAGE_FORWARD if forward else _PAGE_BACKWARD, params, prepare=True)
        rows = await cur.fetchall()
        # The page is dropped unless the channel is readable; no rows: no such channel.
        found = readable_row(rows[0] if rows else None, principal, headers)
        recipients = await _receipts(conn, cid) if found.channel.kind == "direct" else None
    # Each message's columns; none when the channel is all there is (an empty window).
    rows = [row[CHANNEL_WIDTH:] for row in rows] if rows[0][CHANNEL_WIDTH] is not None else []
    more = len(rows) > limit
    rows = rows[:limit] if forward else rows[:limit][::-1]
    items = []
    for seq, message_id, author_id, text, reply_to, sent_at, edited_at, deleted, erased, reactions in rows:  # fmt: skip
        item: dict[str, Any] = {
            "message_id": str(message_id),
            "seq": seq,
            "author_id": str(author_id),
            "reply_to": text_id(reply_to),
            "sent_at": utc(sent_at),
            "edited_at": utc(edited_at),
            "deleted": deleted,
            "erased": erased,
            "reactions": _NO_REACTIONS if reactions is None else msgspec.Raw(reactions),
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
    return Answer({"items": items, "next_cursor": next_cursor}, headers=headers)


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
