"""A chat log written straight to the store, for read-model tests that must not wait for
the chat write API: events with consistent stream versions and message seqs, and users
who can sign in to the read API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from uuid_utils.compat import uuid7

from events.channel import (
    ChannelCreated,
    ChannelDeleted,
    ChatEvent,
    MemberInvited,
    MemberJoined,
    MemberLeft,
    MessageDeleted,
    MessageEdited,
    MessagesDelivered,
    MessageSent,
    MessagesRead,
    ReactionAdded,
    ReactionRemoved,
    stream_of,
)
from infra.store import NO_STREAM, EventStore, StreamAppend
from tests.fix_events import new_event
from tests.integration.test_sessions import login, new_user


@dataclass
class User:
    user_id: str
    auth: dict[str, str]


async def signed_in(write: httpx.AsyncClient) -> User:
    """A registered user with a bearer token for the read API."""
    name, user_id = await new_user(write)
    token = (await login(write, name)).json()["access_token"]
    return User(user_id, {"Authorization": f"Bearer {token}"})


@dataclass
class Message:
    channel_id: str
    message_id: str
    seq: int
    author_id: str


@dataclass
class ChatLog:
    """Appends chat events, each at its stream's current version; `position` is the token
    of the last append (send it as X-Min-Position)."""

    store: EventStore
    versions: dict[str, int] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)
    position: str = ""
    clock: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    def now(self) -> datetime:
        """A clock that ticks a second per event, so orders by time are deterministic."""
        self.clock += timedelta(seconds=1)
        return self.clock

    async def append(self, *events: ChatEvent) -> str:
        """Append `events` atomically, grouped by stream in order; the position token."""
        by_stream: dict[str, list[ChatEvent]] = {}
        for event in events:
            by_stream.setdefault(stream_of(event), []).append(event)
        appends = [
            StreamAppend(stream, self.versions.get(stream, NO_STREAM), [new_event(e) for e in es])
            for stream, es in by_stream.items()
        ]
        result = await self.store.append(appends)
        for stream, es in by_stream.items():
            self.versions[stream] = self.versions.get(stream, 0) + len(es)
        self.position = result.position.token()
        return self.position

    async def channel(
        self, owner: str, *, visibility: str = "public", name: str | None = None,
        password: bool = False, topic: str | None = None,
    ) -> str:  # fmt: skip
        """A group channel owned (and joined) by `owner`; its id."""
        channel_id = str(uuid7())
        at = self.now()
        await self.append(
            ChannelCreated(
                channel_id=channel_id, kind="group", name=name or f"c-{channel_id[-12:]}",
                topic=topic, visibility=visibility,  # type: ignore[arg-type]
                password_hash="$argon2id$v=19$secret" if password else None,
                owner_id=owner, created_at=at,
            ),
            MemberJoined(channel_id=channel_id, user_id=owner, role="owner", joined_at=at),
        )  # fmt: skip
        return channel_id

    async def direct(self, a: str, b: str) -> str:
        """The direct channel of `a` and `b`; its id."""
        channel_id = str(uuid7())
        at = self.now()
        await self.append(
            ChannelCreated(channel_id=channel_id, kind="direct", name="", visibility="private",
                           created_at=at),
            MemberJoined(channel_id=channel_id, user_id=a, role="member", joined_at=at),
            MemberJoined(channel_id=channel_id, user_id=b, role="member", joined_at=at),
        )  # fmt: skip
        return channel_id

    async def join(self, channel_id: str, user_id: str) -> str:
        return await self.append(
            MemberJoined(
                channel_id=channel_id, user_id=user_id, role="member", joined_at=self.now()
            )
        )

    async def invite(self, channel_id: str, user_id: str, by: str) -> str:
        return await self.append(
            MemberInvited(channel_id=channel_id, user_id=user_id, invited_by=by,
                          invited_at=self.now())
        )  # fmt: skip

    async def leave(self, channel_id: str, user_id: str) -> str:
        return await self.append(
            MemberLeft(channel_id=channel_id, user_id=user_id, left_at=self.now())
        )

    async def delete_channel(self, channel_id: str, by: str) -> str:
        return await self.append(
            ChannelDeleted(channel_id=channel_id, deleted_by=by, deleted_at=self.now())
        )

    def message(self, channel_id: str, author: str, text: str, **extra: Any) -> MessageSent:
        """The next message of a channel (not yet appended)."""
        seq = self.seqs.get(channel_id, 0) + 1
        self.seqs[channel_id] = seq
        return MessageSent(channel_id=channel_id, message_id=str(uuid7()), seq=seq,
                           author_id=author, text=text, sent_at=self.now(), **extra)  # fmt: skip

    async def send(self, channel_id: str, author: str, text: str, **extra: Any) -> Message:
        """Append the next message of a channel."""
        event = self.message(channel_id, author, text, **extra)
        await self.append(event)
        return Message(channel_id, event.message_id, event.seq, author)

    async def edit(self, m: Message, text: str) -> str:
        return await self.append(
            MessageEdited(channel_id=m.channel_id, message_id=m.message_id, seq=m.seq, text=text,
                          edited_at=self.now())
        )  # fmt: skip

    async def delete(self, m: Message, by: str) -> str:
        return await self.append(
            MessageDeleted(channel_id=m.channel_id, message_id=m.message_id, seq=m.seq,
                           deleted_by=by, deleted_at=self.now())
        )  # fmt: skip

    async def react(self, m: Message, user_id: str, emoji: str, *, remove: bool = False) -> str:
        kind = ReactionRemoved if remove else ReactionAdded
        at = self.now()
        times = {"removed_at": at} if remove else {"reacted_at": at}
        return await self.append(
            kind(channel_id=m.channel_id, message_id=m.message_id, seq=m.seq, user_id=user_id,
                 emoji=emoji, **times)  # type: ignore[arg-type]
        )  # fmt: skip

    async def receipt(self, m: Message, user_id: str, *, read: bool) -> str:
        """A read (or, with read=False, delivery) receipt of `user_id` up to `m`."""
        if read:
            return await self.append(
                MessagesRead(channel_id=m.channel_id, user_id=user_id, message_id=m.message_id,
                             seq=m.seq, read_at=self.now())
            )  # fmt: skip
        return await self.append(
            MessagesDelivered(channel_id=m.channel_id, user_id=user_id, message_id=m.message_id,
                              seq=m.seq, delivered_at=self.now())
        )  # fmt: skip


def random_id() -> str:
    return str(uuid.uuid4())
