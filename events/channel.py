"""What happens in chat. Streams:

- `channel-<channel_id>`: the channel's whole life, its members and its messages, in one
  order. A message's `seq` counts the channel's messages (1, 2, 3, ... with no gap), so
  every reader sees the same order.
- `channelname-<name>`: the guard stream that keeps live channel names unique; a name is
  claimed with the channel's creation and released with its deletion, atomically.
- `dm-<user_a>-<user_b>` (the two ids sorted): the guard stream that makes the direct
  channel of a pair unique; its first event names the channel.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, assert_never

import msgspec

Visibility = Literal["public", "private"]
Kind = Literal["group", "direct"]
MemberRole = Literal["owner", "member"]


class ChannelCreated(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A channel exists. Direct channels have no name, no owner and are private.
    `password_hash` (argon2id) guards joining; read models never copy it."""

    channel_id: str
    kind: Kind
    name: str
    topic: str | None = None
    visibility: Visibility
    password_hash: str | None = None
    owner_id: str | None = None
    created_at: datetime


class ChannelNameClaimed(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    name: str
    channel_id: str


class ChannelNameReleased(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    name: str
    channel_id: str


class DirectChannelOpened(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The direct channel of two users; appended once per pair, with the channel's creation."""

    channel_id: str
    user_ids: tuple[str, str]


class MemberJoined(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    channel_id: str
    user_id: str
    role: MemberRole
    joined_at: datetime


class MemberInvited(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    channel_id: str
    user_id: str
    invited_by: str
    invited_at: datetime


class MemberLeft(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    channel_id: str
    user_id: str
    left_at: datetime


class ChannelDeleted(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    channel_id: str
    deleted_by: str
    deleted_at: datetime


class MessageSent(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A message, `seq`-th in its channel. `mentions` are the ids of the members its
    `@username`s named; `reply_to_author_id` is whom a reply answers."""

    channel_id: str
    message_id: str
    seq: int
    author_id: str
    text: str
    reply_to: str | None = None
    reply_to_author_id: str | None = None
    mentions: tuple[str, ...] = ()
    sent_at: datetime


class MessageEdited(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    channel_id: str
    message_id: str
    seq: int
    text: str
    edited_at: datetime


class MessageDeleted(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The message keeps its place; read models drop its text."""

    channel_id: str
    message_id: str
    seq: int
    deleted_by: str
    deleted_at: datetime


class ReactionAdded(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    channel_id: str
    message_id: str
    seq: int
    user_id: str
    emoji: str
    reacted_at: datetime


class ReactionRemoved(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    channel_id: str
    message_id: str
    seq: int
    user_id: str
    emoji: str
    removed_at: datetime


class MessagesRead(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A read receipt: `user_id` has read the channel up to and including `seq`."""

    channel_id: str
    user_id: str
    message_id: str
    seq: int
    read_at: datetime


class MessagesDelivered(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A delivery receipt: a device of `user_id` has the channel up to and including `seq`."""

    channel_id: str
    user_id: str
    message_id: str
    seq: int
    delivered_at: datetime


ChannelEvent = (
    ChannelCreated
    | MemberJoined
    | MemberInvited
    | MemberLeft
    | ChannelDeleted
    | MessageSent
    | MessageEdited
    | MessageDeleted
    | ReactionAdded
    | ReactionRemoved
    | MessagesRead
    | MessagesDelivered
)
GuardEvent = ChannelNameClaimed | ChannelNameReleased | DirectChannelOpened
ChatEvent = ChannelEvent | GuardEvent


def channel_stream(channel_id: str) -> str:
    return f"channel-{channel_id}"


def channel_name_stream(name: str) -> str:
    """Names are unique regardless of case: `General` and `general` are one name."""
    return f"channelname-{name.casefold()}"


def direct_stream(user_a: str, user_b: str) -> str:
    low, high = sorted((user_a, user_b))
    return f"dm-{low}-{high}"


def stream_of(event: ChatEvent) -> str:
    """The stream an event belongs to."""
    match event:
        case ChannelNameClaimed() | ChannelNameReleased():
            return channel_name_stream(event.name)
        case DirectChannelOpened():
            return direct_stream(*event.user_ids)
        case (
            ChannelCreated() | MemberJoined() | MemberInvited() | MemberLeft() | ChannelDeleted()
            | MessageSent() | MessageEdited() | MessageDeleted() | ReactionAdded()
            | ReactionRemoved() | MessagesRead() | MessagesDelivered()
        ):  # fmt: skip
            return channel_stream(event.channel_id)
        case _:
            assert_never(event)
