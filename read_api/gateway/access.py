"""Who may watch which topic, asked of the read models and decided by infra.authz.

`channel:<id>`: whoever may read the channel (public, or a member of a private or direct
one; never a deleted one). `auction:<id>`: any signed-in user, if the auction exists.
`me` (or `me:<own id>`): the caller's own notifications, nobody else's. The answers are
read at the moment of asking; the hub asks again when a membership changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from psycopg_pool import AsyncConnectionPool

from infra import authz
from infra.auth import Principal
from infra.authz import Action, ChannelAccess
from read_api.gateway.protocol import parse_id

_CHANNEL = (
    "SELECT c.visibility, c.deleted, m.user_id IS NOT NULL FROM rm_channels.channels c"
    " LEFT JOIN rm_channels.members m ON m.channel_id = c.channel_id AND m.user_id = %s"
    " WHERE c.channel_id = %s"
)
_AUCTION = "SELECT 1 FROM rm_auctions.auctions WHERE auction_id = %s"

Verdict = Literal["ok", "forbidden", "not_found", "invalid_topic"]


@dataclass(frozen=True)
class Topic:
    """A topic a client named, in the feed's spelling (`me` becomes `me:<user id>`)."""

    kind: Literal["channel", "auction", "me"]
    id: str

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.id}"


def parse_topic(raw: str, principal: Principal) -> Topic | None:
    """The topic `raw` names for this caller; None when it names none."""
    if raw == "me":
        return Topic("me", principal.user_id)
    kind, sep, rest = raw.partition(":")
    ident = parse_id(rest) if sep else None
    if ident is None or kind not in ("channel", "auction", "me"):
        return None
    return Topic(kind, ident)  # type: ignore[arg-type]  # checked just above


class Access:
    """Authorization questions about topics, answered from the read models."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def verdict(self, principal: Principal, topic: Topic) -> Verdict:
        """Whether the caller may watch `topic` now. A channel the caller may not read is
        `forbidden` whether or not it exists: the answer must not tell which."""
        if topic.kind == "me":
            mine = topic.id == principal.user_id and authz.can(principal, Action.READ_OWN)
            return "ok" if mine else "forbidden"
        async with self.pool.connection() as conn:
            if topic.kind == "auction":
                cur = await conn.execute(_AUCTION, (topic.id,))
                if await cur.fetchone() is None:
                    return "not_found"
                return "ok" if authz.can(principal, Action.READ_AUCTIONS) else "forbidden"
            cur = await conn.execute(_CHANNEL, (principal.user_id, topic.id))
            row = await cur.fetchone()
        if row is None or row[1]:
            return "forbidden"
        return "ok" if authz.can(principal, Action.READ_CHANNEL, ChannelAccess(row[0], row[2])) else "forbidden"  # fmt: skip

    async def may_type(self, principal: Principal, channel_id: str) -> bool:
        """Members of a live channel may say they are typing in it; nobody else."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_CHANNEL, (principal.user_id, channel_id))
            row = await cur.fetchone()
        return row is not None and not row[1] and row[2] and authz.can(principal, Action.CHAT)
