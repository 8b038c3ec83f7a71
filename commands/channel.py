"""The channel decider: membership, messages, reactions and receipts of one channel.

Pure: ids, times, the join password's check and the mentioned users' ids arrive in the
command. The state uses persistent maps, so folding a busy channel's millionth message
costs what folding its first did.
"""

from __future__ import annotations

from datetime import datetime
from typing import assert_never

import msgspec
from pyrsistent import pmap, pset
from pyrsistent.typing import PMap, PSet

from commands.errors import DomainError
from events.channel import (
    ChannelCreated,
    ChannelDeleted,
    ChannelEvent,
    Kind,
    MemberInvited,
    MemberJoined,
    MemberLeft,
    MemberRole,
    MessageDeleted,
    MessageEdited,
    MessagesDelivered,
    MessageSent,
    MessagesRead,
    ReactionAdded,
    ReactionRemoved,
    Visibility,
)


class ChannelNotFound(DomainError):
    code = "channel_not_found"
    status = 404


class NotAMember(DomainError):
    code = "not_a_member"
    status = 403


class AlreadyMember(DomainError):
    code = "already_member"
    status = 409


class WrongPassword(DomainError):
    code = "wrong_password"
    status = 403


class NotAllowed(DomainError):
    code = "forbidden"
    status = 403


class NotTheAuthor(DomainError):
    code = "not_author"
    status = 403


class MessageNotFound(DomainError):
    code = "message_not_found"
    status = 404


class MessageGone(DomainError):
    code = "message_deleted"
    status = 409


class ReplyToUnknown(DomainError):
    code = "reply_to_not_found"
    status = 422


class DirectChannel(DomainError):
    code = "direct_channel"
    status = 409


class MessageFacts(msgspec.Struct, frozen=True):
    """What the rules need to know about one message."""

    seq: int
    author_id: str
    deleted: bool = False


class NoChannel(msgspec.Struct, frozen=True):
    pass


class Live(msgspec.Struct, frozen=True, kw_only=True):
    channel_id: str
    name: str
    kind: Kind
    visibility: Visibility
    password_hash: str | None
    owner_id: str | None
    members: PMap[str, MemberRole]
    invited: PSet[str]
    seq: int = 0  # messages sent so far
    messages: PMap[str, MessageFacts]
    reactions: PSet[tuple[str, str, str]]  # (message_id, user_id, emoji)
    read: PMap[str, int]  # user -> last read seq
    delivered: PMap[str, int]


class Deleted(msgspec.Struct, frozen=True):
    channel_id: str
    name: str


ChannelState = NoChannel | Live | Deleted
INITIAL: ChannelState = NoChannel()


def evolve(state: ChannelState, event: ChannelEvent) -> ChannelState:
    """Fold one event into the channel's state; never fails."""
    if isinstance(event, ChannelCreated):
        return Live(
            channel_id=event.channel_id, name=event.name, kind=event.kind, visibility=event.visibility,
            password_hash=event.password_hash, owner_id=event.owner_id, members=pmap(),
            invited=pset(), messages=pmap(), reactions=pset(), read=pmap(), delivered=pmap(),
        )  # fmt: skip
    if not isinstance(state, Live):
        return state
    r = msgspec.structs.replace
    match event:
        case MemberJoined():
            return r(state, members=state.members.set(event.user_id, event.role),
                     invited=state.invited.discard(event.user_id))  # fmt: skip
        case MemberInvited():
            return r(state, invited=state.invited.add(event.user_id))
        case MemberLeft():
            return r(state, members=state.members.discard(event.user_id))
        case ChannelDeleted():
            return Deleted(state.channel_id, state.name)
        case MessageSent():
            facts = MessageFacts(event.seq, event.author_id)
            return r(state, seq=event.seq, messages=state.messages.set(event.message_id, facts),
                     read=state.read.set(event.author_id, event.seq))  # fmt: skip
        case MessageEdited():
            return state
        case MessageDeleted():
            gone = r(state.messages[event.message_id], deleted=True)
            return r(state, messages=state.messages.set(event.message_id, gone))
        case ReactionAdded():
            key = (event.message_id, event.user_id, event.emoji)
            return r(state, reactions=state.reactions.add(key))
        case ReactionRemoved():
            key = (event.message_id, event.user_id, event.emoji)
            return r(state, reactions=state.reactions.discard(key))
        case MessagesRead():
            return r(state, read=state.read.set(event.user_id, event.seq))
        case MessagesDelivered():
            return r(state, delivered=state.delivered.set(event.user_id, event.seq))
        case ChannelCreated():
            return state
        case _:
            assert_never(event)


# -- commands -----------------------------------------------------------------------------


class Join(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    password_ok: bool  # the handler checked the given password against the channel's hash
    at: datetime


class Invite(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    actor_is_admin: bool
    user_id: str
    at: datetime


class Leave(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    at: datetime


class DeleteChannel(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    actor_is_admin: bool
    at: datetime


class Send(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    message_id: str
    text: str
    reply_to: str | None = None
    mentioned: tuple[str, ...] = ()  # the users the text's @usernames name
    at: datetime


class Edit(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    message_id: str
    text: str
    at: datetime


class DeleteMessage(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    actor_is_admin: bool
    message_id: str
    at: datetime


class React(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    message_id: str
    emoji: str
    at: datetime


class Unreact(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    message_id: str
    emoji: str
    at: datetime


class MarkRead(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    message_id: str
    at: datetime


class MarkDelivered(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    message_id: str
    at: datetime


ChannelCommand = (
    Join | Invite | Leave | DeleteChannel | Send | Edit | DeleteMessage | React | Unreact
    | MarkRead | MarkDelivered
)  # fmt: skip


def _visible_live(state: ChannelState, actor_id: str) -> Live:
    """The live channel, if the actor may know of it (public, a member, or invited)."""
    match state:
        case Live():
            if (
                state.visibility == "public"
                or actor_id in state.members
                or actor_id in state.invited
            ):
                return state
            raise ChannelNotFound("no such channel")
        case NoChannel() | Deleted():
            raise ChannelNotFound("no such channel")
        case _:
            assert_never(state)


def _member_of(state: ChannelState, actor_id: str) -> Live:
    live = _visible_live(state, actor_id)
    if actor_id not in live.members:
        raise NotAMember("you are not a member of this channel")
    return live


def _message_of(live: Live, message_id: str) -> MessageFacts:
    facts = live.messages.get(message_id)
    if facts is None:
        raise MessageNotFound("no such message in this channel")
    return facts


def _group(live: Live) -> Live:
    if live.kind == "direct":
        raise DirectChannel("a direct channel has exactly its two users")
    return live


def decide(command: ChannelCommand, state: ChannelState) -> list[ChannelEvent]:
    """Every rule of a channel's life. Doing what is already done appends nothing."""
    match command:
        case Join():
            live = _group(_visible_live(state, command.actor_id))
            if command.actor_id in live.members:
                raise AlreadyMember("you are already a member")
            guarded = live.password_hash is not None and command.actor_id not in live.invited
            if guarded and not command.password_ok:
                raise WrongPassword("that is not this channel's password")
            return [MemberJoined(channel_id=live.channel_id, user_id=command.actor_id,
                                 role="member", joined_at=command.at)]  # fmt: skip
        case Invite():
            live = _group(_member_of(state, command.actor_id))
            if command.actor_id != live.owner_id and not command.actor_is_admin:
                raise NotAllowed("only the channel's owner or an admin may invite")
            if command.user_id in live.members:
                raise AlreadyMember("that user is already a member")
            if command.user_id in live.invited:
                return []
            return [MemberInvited(channel_id=live.channel_id, user_id=command.user_id,
                                  invited_by=command.actor_id, invited_at=command.at)]  # fmt: skip
        case Leave():
            live = _group(_member_of(state, command.actor_id))
            return [MemberLeft(channel_id=live.channel_id, user_id=command.actor_id,
                               left_at=command.at)]  # fmt: skip
        case DeleteChannel():
            live = _group(_visible_live(state, command.actor_id))
            if command.actor_id != live.owner_id and not command.actor_is_admin:
                raise NotAllowed("only the channel's owner or an admin may delete it")
            return [ChannelDeleted(channel_id=live.channel_id, deleted_by=command.actor_id,
                                   deleted_at=command.at)]  # fmt: skip
        case Send():
            live = _member_of(state, command.actor_id)
            reply_author = None
            if command.reply_to is not None:
                replied = live.messages.get(command.reply_to)
                if replied is None:
                    raise ReplyToUnknown("reply_to names no message of this channel")
                reply_author = replied.author_id
            mentions = tuple(
                dict.fromkeys(
                    u for u in command.mentioned if u in live.members and u != command.actor_id
                )
            )
            return [MessageSent(channel_id=live.channel_id, message_id=command.message_id,
                                seq=live.seq + 1, author_id=command.actor_id, text=command.text,
                                reply_to=command.reply_to, reply_to_author_id=reply_author,
                                mentions=mentions, sent_at=command.at)]  # fmt: skip
        case Edit():
            live = _member_of(state, command.actor_id)
            facts = _message_of(live, command.message_id)
            if facts.author_id != command.actor_id:
                raise NotTheAuthor("only its author may edit a message")
            if facts.deleted:
                raise MessageGone("that message was deleted")
            return [MessageEdited(channel_id=live.channel_id, message_id=command.message_id,
                                  seq=facts.seq, text=command.text, edited_at=command.at)]  # fmt: skip
        case DeleteMessage():
            live = _visible_live(state, command.actor_id)
            facts = _message_of(live, command.message_id)
            allowed = command.actor_id in (facts.author_id, live.owner_id)
            if not (allowed or command.actor_is_admin):
                raise NotAllowed("only its author, the channel's owner or an admin may delete it")
            if facts.deleted:
                return []
            return [MessageDeleted(channel_id=live.channel_id, message_id=command.message_id,
                                   seq=facts.seq, deleted_by=command.actor_id,
                                   deleted_at=command.at)]  # fmt: skip
        case React() | Unreact():
            live = _member_of(state, command.actor_id)
            facts = _message_of(live, command.message_id)
            if facts.deleted:
                raise MessageGone("that message was deleted")
            held = (command.message_id, command.actor_id, command.emoji) in live.reactions
            if isinstance(command, React):
                if held:
                    return []
                return [ReactionAdded(channel_id=live.channel_id, message_id=command.message_id,
                                      seq=facts.seq, user_id=command.actor_id,
                                      emoji=command.emoji, reacted_at=command.at)]  # fmt: skip
            if not held:
                return []
            return [ReactionRemoved(channel_id=live.channel_id, message_id=command.message_id,
                                    seq=facts.seq, user_id=command.actor_id, emoji=command.emoji,
                                    removed_at=command.at)]  # fmt: skip
        case MarkRead():
            live = _member_of(state, command.actor_id)
            facts = _message_of(live, command.message_id)
            if facts.seq <= live.read.get(command.actor_id, 0):
                return []
            return [MessagesRead(channel_id=live.channel_id, user_id=command.actor_id,
                                 message_id=command.message_id, seq=facts.seq,
                                 read_at=command.at)]  # fmt: skip
        case MarkDelivered():
            live = _member_of(state, command.actor_id)
            facts = _message_of(live, command.message_id)
            already = max(
                live.delivered.get(command.actor_id, 0), live.read.get(command.actor_id, 0)
            )
            if facts.seq <= already:
                return []
            return [MessagesDelivered(channel_id=live.channel_id, user_id=command.actor_id,
                                      message_id=command.message_id, seq=facts.seq,
                                      delivered_at=command.at)]  # fmt: skip
        case _:
            assert_never(command)
