"""The caller's own unread counts and notifications."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromQuery

from infra.auth import Principal
from infra.authz import Action
from read_api.consistency import fresh_enough
from read_api.paging import DEFAULT_LIMIT, AwareTime, Limit, decode_cursor, encode_cursor, page
from read_api.services import Services
from read_api.views import text_id, utc

# Only channels with something new get past `c.last_seq > m.last_read_seq`, so the count
# runs where it can be non-zero; what it counts excludes the member's own and deleted ones.
_UNREAD = (
    "SELECT channel_id, unread, last_read_seq FROM ("
    " SELECT m.channel_id, m.last_read_seq, (SELECT count(*) FROM rm_messages.messages x"
    "  WHERE x.channel_id = m.channel_id AND x.seq > m.last_read_seq AND NOT x.deleted"
    "  AND x.author_id <> m.user_id) AS unread"
    " FROM rm_channels.members m JOIN rm_channels.channels c ON c.channel_id = m.channel_id"
    " WHERE m.user_id = %s AND NOT c.deleted AND c.last_seq > m.last_read_seq) AS u"
    " WHERE unread > 0 ORDER BY channel_id"
)
_NOTIFICATIONS = (
    "SELECT notification_id, kind, channel_id, message_id, seq, actor_id, created_at, read,"
    " auction_id, amount, currency"
    " FROM rm_notifications.notifications WHERE user_id = %s"
    " AND (created_at, notification_id) < (%s, %s){unread}"
    " ORDER BY created_at DESC, notification_id DESC LIMIT %s"
)
_ALL = _NOTIFICATIONS.format(unread="")
_UNREAD_ONLY = _NOTIFICATIONS.format(unread=" AND NOT read")
_END_OF_TIME = datetime(9999, 12, 31, tzinfo=UTC)  # after every notification: the first page


@get(
    "/v1/me/unread",
    tags=["me"],
    summary="Unread message counts of the caller's channels",
    opt={"action": Action.READ_OWN},
)
async def get_unread(
    request: Request[Any, Any, Any],
    services: NamedDependency[Services],
    principal: NamedDependency[Principal],
) -> Response[list[dict[str, Any]]]:
    """`[{channel_id, unread_count, last_read_seq}]` for the caller's live channels that
    have unread messages (others' messages after the caller's last read, deleted ones not
    counted), in channel id order. A channel with nothing unread is left out."""
    headers = await fresh_enough(request, services, ["channels", "messages"])
    async with services.pool.connection() as conn:
        cur = await conn.execute(_UNREAD, (uuid.UUID(principal.user_id),), prepare=True)
        rows = await cur.fetchall()
    body = [{"channel_id": str(c), "unread_count": n, "last_read_seq": s} for c, n, s in rows]
    return Response(body, headers=headers)


@get(
    "/v1/me/notifications",
    tags=["me"],
    summary="The caller's notifications, newest first",
    opt={"action": Action.READ_OWN},
)
async def list_notifications(
    request: Request[Any, Any, Any],
    services: NamedDependency[Services],
    principal: NamedDependency[Principal],
    unread_only: FromQuery[bool] = False,
    limit: Limit = DEFAULT_LIMIT,
    cursor: FromQuery[str | None] = None,
) -> Response[dict[str, Any]]:
    """`{items: [{notification_id, kind, channel_id, message_id, seq, auction_id, amount,
    currency, actor_id, created_at, read}], next_cursor}`."""
    headers = await fresh_enough(request, services, ["notifications"])
    last = decode_cursor(cursor, tuple[AwareTime, str]) if cursor else (_END_OF_TIME, "")
    async with services.pool.connection() as conn:
        cur = await conn.execute(
            _UNREAD_ONLY if unread_only else _ALL,
            (uuid.UUID(principal.user_id), *last, limit + 1),
            prepare=True,
        )
        rows, more = page(await cur.fetchall(), limit)
    items = [
        {"notification_id": r[0], "kind": r[1], "channel_id": text_id(r[2]),
         "message_id": text_id(r[3]), "seq": r[4], "actor_id": text_id(r[5]),
         "created_at": utc(r[6]), "read": r[7], "auction_id": text_id(r[8]), "amount": r[9],
         "currency": r[10]}
        for r in rows
    ]  # fmt: skip
    next_cursor = encode_cursor((rows[-1][6], rows[-1][0])) if more else None
    return Response({"items": items, "next_cursor": next_cursor}, headers=headers)
