"""Opening and closing channels, where another stream guards a uniqueness rule: a live
channel's name (`channelname-<name>`) and the one direct channel of a pair of users
(`dm-<a>-<b>`). The guard's events are appended atomically with the channel's."""

from __future__ import annotations

from datetime import datetime
from typing import assert_never

import msgspec

from commands.channel import ChannelState, DeleteChannel, Live, decide
from commands.errors import DomainError
from events.channel import (
    ChannelCreated,
    ChannelNameClaimed,
    ChannelNameReleased,
    ChatEvent,
    DirectChannelOpened,
    MemberJoined,
    Visibility,
)


class ChannelNameTaken(DomainError):
    code = "channel_name_taken"
    status = 409


class NoSelfChannel(DomainError):
    code = "invalid_user"
    status = 422


class NameFree(msgspec.Struct, frozen=True):
    pass


class NameHeld(msgspec.Struct, frozen=True):
    channel_id: str


NameState = NameFree | NameHeld
NAME_FREE: NameState = NameFree()


def evolve_name(state: NameState, event: ChannelNameClaimed | ChannelNameReleased) -> NameState:
    """Fold the name guard's events; never fails."""
    match event:
        case ChannelNameClaimed():
            return NameHeld(event.channel_id)
        case ChannelNameReleased():
            return NAME_FREE
        case _:
            assert_never(event)


class CreateChannel(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    channel_id: str
    name: str
    topic: str | None = None
    visibility: Visibility
    password_hash: str | None = None
    at: datetime


def decide_create(command: CreateChannel, name: NameState) -> list[ChatEvent]:
    """A new channel under a free name; its creator is its owner and first member."""
    match name:
        case NameHeld():
            raise ChannelNameTaken(f"a channel named {command.name!r} exists")
        case NameFree():
            pass
        case _:
            assert_never(name)
    return [
        ChannelNameClaimed(name=command.name, channel_id=command.channel_id),
        ChannelCreated(
            channel_id=command.channel_id, kind="group", name=command.name, topic=command.topic,
            visibility=command.visibility, password_hash=command.password_hash,
            owner_id=command.actor_id, created_at=command.at,
        ),
        MemberJoined(channel_id=command.channel_id, user_id=command.actor_id, role="owner",
                     joined_at=command.at),
    ]  # fmt: skip


def decide_delete(command: DeleteChannel, state: ChannelState) -> list[ChatEvent]:
    """Delete a channel (owner or admin) and free its name."""
    events: list[ChatEvent] = list(decide(command, state))
    assert isinstance(state, Live)  # decide refused every other state
    return [*events, ChannelNameReleased(name=state.name, channel_id=state.channel_id)]


class OpenDirect(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    other_id: str
    channel_id: str  # used only if the pair has no channel yet
    at: datetime


class NoDirect(msgspec.Struct, frozen=True):
    pass


class DirectOpen(msgspec.Struct, frozen=True):
    channel_id: str


DirectState = NoDirect | DirectOpen
NO_DIRECT: DirectState = NoDirect()


def evolve_direct(state: DirectState, event: DirectChannelOpened) -> DirectState:
    """The pair's channel, once opened; never fails."""
    return DirectOpen(event.channel_id)


def decide_direct(command: OpenDirect, state: DirectState) -> list[ChatEvent]:
    """The pair's one direct channel: nothing to do when it exists, else open it."""
    if command.actor_id == command.other_id:
        raise NoSelfChannel("a direct channel needs another user")
    match state:
        case DirectOpen():
            return []
        case NoDirect():
            pass
        case _:
            assert_never(state)
    pair = tuple(sorted((command.actor_id, command.other_id)))
    assert len(pair) == 2
    return [
        DirectChannelOpened(channel_id=command.channel_id, user_ids=(pair[0], pair[1])),
        ChannelCreated(channel_id=command.channel_id, kind="direct", name="",
                       visibility="private", created_at=command.at),
        *(MemberJoined(channel_id=command.channel_id, user_id=user, role="member",
                       joined_at=command.at) for user in pair),
    ]  # fmt: skip
