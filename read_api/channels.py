"""Channels from the channels read model: the caller's and the public directory, one
channel, its members. A channel the caller may not read (private or direct, and not a
member), a deleted one, an unknown or malformed id: all the same 404 `channel_not_found`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from psycopg import AsyncConnection

from infra import authz
from infra.auth import Principal
from infra.authz import Action, ChannelAccess
from infra.http import Problem
from read_api.consistency import fresh_enough
from read_api.paging import DEFAULT_LIMIT, AwareTime, Limit, decode_cursor, encode_cursor, page
from read_api.services import Services
from read_api.views import parse_id, text_id, utc

# The "last key" of a first page: before every channel id, and before every join.
NIL = uuid.UUID(int=0)
_DAWN = datetime(1, 1, 1, tzinfo=UTC)
_COLUMNS = (
    "c.channel_id, c.kind, c.name, c.topic, c.visibility, c.owner_id, c.has_password,"
    " c.created_at, c.member_count, c.last_message_at, c.last_seq,"
    " CASE WHEN c.kind = 'direct' THEN ARRAY(SELECT d.user_id FROM rm_channels.members d"
    "  WHERE d.channel_id = c.channel_id ORDER BY d.user_id) END"
)
_JOINED = (
    f"SELECT {_COLUMNS} FROM rm_channels.members m"
    " JOIN rm_channels.channels c ON c.channel_id = m.channel_id"
    " WHERE m.user_id = %s AND NOT c.deleted AND m.channel_id > %s"
    " ORDER BY m.channel_id LIMIT %s"
)
_PUBLIC = (
    f"SELECT {_COLUMNS}, lower(c.name) FROM rm_channels.channels c"
    " WHERE c.visibility = 'public' AND NOT c.deleted AND (lower(c.name), c.channel_id) > (%s, %s)"
    " ORDER BY lower(c.name), c.channel_id LIMIT %s"
)
ONE_SQL = (
    f"SELECT {_COLUMNS}, m.user_id IS NOT NULL, m.last_read_seq, m.last_delivered_seq"
    " FROM rm_channels.channels c LEFT JOIN rm_channels.members m"
    " ON m.channel_id = c.channel_id AND m.user_id = %s"
    " WHERE c.channel_id = %s AND NOT c.deleted"
)
CHANNEL_WIDTH = 15  # the columns ONE_SQL selects
_MEMBERS = (
    "SELECT user_id, role, joined_at FROM rm_channels.members"
    " WHERE channel_id = %s AND (joined_at, user_id) > (%s, %s)"
    " ORDER BY joined_at, user_id LIMIT %s"
)


@dataclass(frozen=True)
class Channel:
    """A live channel as the read model has it."""

    channel_id: uuid.UUID
    kind: str
    name: str | None
    topic: str | None
    visibility: str
    owner_id: uuid.UUID | None
    has_password: bool
    created_at: datetime
    member_count: int
    last_message_at: datetime | None
    last_seq: int
    member_ids: list[uuid.UUID] | None  # direct channels only

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Channel:
        """Build from a row selected with `_COLUMNS`."""
        return cls(
            channel_id=row[0], kind=row[1], name=row[2], topic=row[3], visibility=row[4],
            owner_id=row[5], has_password=row[6], created_at=row[7], member_count=row[8],
            last_message_at=row[9], last_seq=row[10], member_ids=row[11],
        )  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """The list item: what a channel list shows."""
        view: dict[str, Any] = {
            "channel_id": str(self.channel_id),
            "kind": self.kind,
            "name": self.name,
            "topic": self.topic,
            "visibility": self.visibility,
            "member_count": self.member_count,
            "last_message_at": utc(self.last_message_at),
            "created_at": utc(self.created_at),
            "has_password": self.has_password,
        }
        if self.member_ids is not None:  # who a direct channel is with
            view["member_ids"] = [str(u) for u in self.member_ids]
        return view


@dataclass(frozen=True)
class Readable:
    """A channel the caller may read, with the caller's own receipts when a member."""

    channel: Channel
    is_member: bool
    last_read_seq: int
    last_delivered_seq: int


async def readable_channel(
    conn: AsyncConnection[Any], principal: Principal, channel_id: str, headers: dict[str, str]
) -> Readable:
    """The channel if the caller may read it; 404 `channel_not_found` however it is not."""
    cid = parse_id(channel_id)
    row = None
    if cid is not None:
        cur = await conn.execute(ONE_SQL, (uuid.UUID(principal.user_id), cid), prepare=True)
        row = await cur.fetchone()
    return readable_row(row, principal, headers)


def readable_row(row: Any, principal: Principal, headers: dict[str, str]) -> Readable:
    """The channel of a row selected with `ONE_SQL`, if the caller may read it; else 404."""
    if row is not None:
        found = Readable(Channel.from_row(row), bool(row[12]), row[13] or 0, row[14] or 0)
        access = ChannelAccess(visibility=found.channel.visibility, is_member=found.is_member)
        if authz.can(principal, Action.READ_CHANNEL, access):
            return found
    raise Problem(404, "channel_not_found", "no such channel", headers=headers)


@get(
    "/v1/channels",
    tags=["channels"],
    summary="The caller's channels, or the public directory",
    opt={"action": Action.READ_CHANNELS},
)
async def list_channels(
    request: Request[Any, Any, Any],
    services: NamedDependency[Services],
    principal: NamedDependency[Principal],
    listing: Annotated[Literal["joined", "public"], QueryParameter(name="scope")] = "joined",
    limit: Limit = DEFAULT_LIMIT,
    cursor: FromQuery[str | None] = None,
) -> Response[dict[str, Any]]:
    """`joined`: the caller's live channels, direct ones included, in id (creation) order.
    `public`: every live public channel, in name order. `{items, next_cursor}`."""
    headers = await fresh_enough(request, services, ["channels"])
    params: tuple[Any, ...]
    if listing == "joined":
        (after,) = decode_cursor(cursor, tuple[uuid.UUID]) if cursor else (NIL,)
        query, params = _JOINED, (uuid.UUID(principal.user_id), after, limit + 1)
    else:
        name, after = decode_cursor(cursor, tuple[str, uuid.UUID]) if cursor else ("", NIL)
        query, params = _PUBLIC, (name, after, limit + 1)
    async with services.pool.connection() as conn:
        cur = await conn.execute(query, params, prepare=True)
        rows, more = page(await cur.fetchall(), limit)
    next_cursor = None
    if more:  # the sort key as the database compares it (its lower(), not Python's)
        last = rows[-1]
        next_cursor = encode_cursor((last[0],) if listing == "joined" else (last[12], last[0]))
    body = {"items": [Channel.from_row(r).summary() for r in rows], "next_cursor": next_cursor}
    return Response(body, headers=headers)


@get(
    "/v1/channels/{channel_id:str}",
    tags=["channels"],
    summary="One channel (private and direct ones for members only)",
    opt={"action": Action.READ_CHANNEL},
)
async def get_channel(
    request: Request[Any, Any, Any],
    channel_id: FromPath[str],
    services: NamedDependency[Services],
    principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:
    """The channel's summary plus `owner_id`, `last_seq` and whether the caller is in it."""
    headers = await fresh_enough(request, services, ["channels"])
    async with services.pool.connection() as conn:
        found = await readable_channel(conn, principal, channel_id, headers)
    body = {
        **found.channel.summary(),
        "owner_id": text_id(found.channel.owner_id),
        "last_seq": found.channel.last_seq,
        "is_member": found.is_member,
    }
    return Response(body, headers=headers)


@get(
    "/v1/channels/{channel_id:str}/members",
    tags=["channels"],
    summary="A channel's members with role and joined_at",
    opt={"action": Action.READ_CHANNEL},
)
async def list_members(
    request: Request[Any, Any, Any],
    channel_id: FromPath[str],
    services: NamedDependency[Services],
    principal: NamedDependency[Principal],
    limit: Limit = DEFAULT_LIMIT,
    cursor: FromQuery[str | None] = None,
) -> Response[dict[str, Any]]:
    """Members in the order they joined: `{items: [{user_id, role, joined_at}], next_cursor}`."""
    headers = await fresh_enough(request, services, ["channels"])
    after = decode_cursor(cursor, tuple[AwareTime, uuid.UUID]) if cursor else (_DAWN, NIL)
    async with services.pool.connection() as conn:
        found = await readable_channel(conn, principal, channel_id, headers)
        cur = await conn.execute(
            _MEMBERS, (found.channel.channel_id, *after, limit + 1), prepare=True
        )
        rows, more = page(await cur.fetchall(), limit)
    items = [{"user_id": str(r[0]), "role": r[1], "joined_at": utc(r[2])} for r in rows]
    next_cursor = encode_cursor((rows[-1][2], rows[-1][0])) if more else None
    return Response({"items": items, "next_cursor": next_cursor}, headers=headers)
