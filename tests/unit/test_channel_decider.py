"""The channel deciders, as specifications: given(events).when(command).then(events)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from commands import channel as ch
from commands import channel_guard as guard
from events.channel import (
    ChannelCreated,
    ChannelDeleted,
    ChannelNameClaimed,
    ChannelNameReleased,
    DirectChannelOpened,
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
)
from tests.spec import Decider

AT = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
C, OWNER, ANN, BOB, EVE = "c1", "owner", "ann", "bob", "eve"

channel = Decider(ch.decide, ch.evolve, ch.INITIAL)
names = Decider(guard.decide_create, guard.evolve_name, guard.NAME_FREE)
pairs = Decider(guard.decide_direct, guard.evolve_direct, guard.NO_DIRECT)


def created(visibility: str = "public", password_hash: str | None = None) -> ChannelCreated:
    return ChannelCreated(channel_id=C, kind="group", name="general", visibility=visibility,  # type: ignore[arg-type]
                          password_hash=password_hash, owner_id=OWNER, created_at=AT)  # fmt: skip


def joined(user: str, role: str = "member") -> MemberJoined:
    return MemberJoined(channel_id=C, user_id=user, role=role, joined_at=AT)  # type: ignore[arg-type]


def sent(seq: int, author: str = ANN, message_id: str | None = None, **kw: object) -> MessageSent:
    return MessageSent(channel_id=C, message_id=message_id or f"m{seq}", seq=seq,
                       author_id=author, text=f"hello {seq}", sent_at=AT, **kw)  # type: ignore[arg-type]  # fmt: skip


def send(author: str = ANN, message_id: str = "m9", **kw: object) -> ch.Send:
    return ch.Send(actor_id=author, message_id=message_id, text="hi", at=AT, **kw)  # type: ignore[arg-type]


PUBLIC = (created(), joined(OWNER, "owner"), joined(ANN))
PRIVATE = (created("private"), joined(OWNER, "owner"), joined(ANN))


# -- creation and names --------------------------------------------------------------------


def test_create_claims_the_name_and_makes_the_creator_owner() -> None:
    command = guard.CreateChannel(actor_id=OWNER, channel_id=C, name="general",
                                  visibility="public", at=AT)  # fmt: skip
    names.given().when(command).then(
        ChannelNameClaimed(name="general", channel_id=C),
        ChannelCreated(channel_id=C, kind="group", name="general", visibility="public",
                       owner_id=OWNER, created_at=AT),
        joined(OWNER, "owner"),
    )  # fmt: skip


def test_a_taken_name_is_refused_and_a_released_one_is_free_again() -> None:
    command = guard.CreateChannel(actor_id=OWNER, channel_id="c2", name="general",
                                  visibility="public", at=AT)  # fmt: skip
    claim = ChannelNameClaimed(name="general", channel_id=C)
    names.given(claim).when(command).raises(guard.ChannelNameTaken)
    release = ChannelNameReleased(name="general", channel_id=C)
    events = names.given(claim, release).when(command).decider.decide
    assert events(command, names.given(claim, release).state)[0] == ChannelNameClaimed(
        name="general", channel_id="c2"
    )


def test_deleting_releases_the_name_and_only_owner_or_admin_may() -> None:
    delete = ch.DeleteChannel(actor_id=OWNER, actor_is_admin=False, at=AT)
    state = channel.given(*PUBLIC).state
    assert guard.decide_delete(delete, state) == [
        ChannelDeleted(channel_id=C, deleted_by=OWNER, deleted_at=AT),
        ChannelNameReleased(name="general", channel_id=C),
    ]
    channel.given(*PUBLIC).when(ch.DeleteChannel(actor_id=ANN, actor_is_admin=False, at=AT)).raises(
        ch.NotAllowed
    )
    channel.given(*PUBLIC).when(ch.DeleteChannel(actor_id=EVE, actor_is_admin=True, at=AT)).then(
        ChannelDeleted(channel_id=C, deleted_by=EVE, deleted_at=AT)
    )


def test_a_deleted_channel_is_gone_for_everything() -> None:
    gone = (*PUBLIC, ChannelDeleted(channel_id=C, deleted_by=OWNER, deleted_at=AT))
    channel.given(*gone).when(send()).raises(ch.ChannelNotFound)
    channel.given(*gone).when(ch.Join(actor_id=BOB, password_ok=True, at=AT)).raises(
        ch.ChannelNotFound
    )
    with pytest.raises(ch.ChannelNotFound):
        guard.decide_delete(
            ch.DeleteChannel(actor_id=OWNER, actor_is_admin=False, at=AT),
            channel.given(*gone).state,
        )


# -- membership ----------------------------------------------------------------------------


def test_join_a_public_channel() -> None:
    channel.given(*PUBLIC).when(ch.Join(actor_id=BOB, password_ok=False, at=AT)).then(joined(BOB))


def test_double_join_is_refused() -> None:
    channel.given(*PUBLIC).when(ch.Join(actor_id=ANN, password_ok=False, at=AT)).raises(
        ch.AlreadyMember
    )


def test_a_password_guards_joining_unless_invited() -> None:
    guarded = (created(password_hash="$argon2id$..."), joined(OWNER, "owner"))
    channel.given(*guarded).when(ch.Join(actor_id=BOB, password_ok=False, at=AT)).raises(
        ch.WrongPassword
    )
    channel.given(*guarded).when(ch.Join(actor_id=BOB, password_ok=True, at=AT)).then(joined(BOB))
    invited = MemberInvited(channel_id=C, user_id=BOB, invited_by=OWNER, invited_at=AT)
    channel.given(*guarded, invited).when(ch.Join(actor_id=BOB, password_ok=False, at=AT)).then(
        joined(BOB)
    )


def test_a_private_channel_is_invisible_until_invited() -> None:
    channel.given(*PRIVATE).when(ch.Join(actor_id=BOB, password_ok=True, at=AT)).raises(
        ch.ChannelNotFound
    )
    invite = ch.Invite(actor_id=OWNER, actor_is_admin=False, user_id=BOB, at=AT)
    invited = MemberInvited(channel_id=C, user_id=BOB, invited_by=OWNER, invited_at=AT)
    channel.given(*PRIVATE).when(invite).then(invited)
    channel.given(*PRIVATE, invited).when(ch.Join(actor_id=BOB, password_ok=False, at=AT)).then(
        joined(BOB)
    )
    channel.given(*PRIVATE, invited).when(invite).then()  # inviting twice changes nothing


def test_only_the_owner_or_an_admin_member_invites_and_members_are_not_invited() -> None:
    channel.given(*PRIVATE).when(
        ch.Invite(actor_id=ANN, actor_is_admin=False, user_id=BOB, at=AT)
    ).raises(ch.NotAllowed)
    channel.given(*PRIVATE).when(
        ch.Invite(actor_id=OWNER, actor_is_admin=False, user_id=ANN, at=AT)
    ).raises(ch.AlreadyMember)
    channel.given(*PRIVATE).when(
        ch.Invite(actor_id=EVE, actor_is_admin=True, user_id=BOB, at=AT)
    ).raises(ch.ChannelNotFound)  # an admin outside a private channel does not see it either


def test_leave_then_post_is_refused() -> None:
    left = MemberLeft(channel_id=C, user_id=ANN, left_at=AT)
    channel.given(*PUBLIC).when(ch.Leave(actor_id=ANN, at=AT)).then(left)
    channel.given(*PUBLIC, left).when(send()).raises(ch.NotAMember)
    channel.given(*PUBLIC, left).when(ch.Leave(actor_id=ANN, at=AT)).raises(ch.NotAMember)
    # in a private channel, a former member no longer even sees it
    channel.given(*PRIVATE, left).when(send()).raises(ch.ChannelNotFound)


# -- messages ------------------------------------------------------------------------------


def test_messages_are_numbered_without_gaps() -> None:
    channel.given(*PUBLIC).when(send(message_id="m1")).then(
        MessageSent(channel_id=C, message_id="m1", seq=1, author_id=ANN, text="hi", sent_at=AT)
    )
    channel.given(*PUBLIC, sent(1), sent(2)).when(send(message_id="m3")).then(
        MessageSent(channel_id=C, message_id="m3", seq=3, author_id=ANN, text="hi", sent_at=AT)
    )


def test_a_non_member_cannot_post() -> None:
    channel.given(*PUBLIC).when(send(BOB)).raises(ch.NotAMember)
    channel.given(*PRIVATE).when(send(BOB)).raises(ch.ChannelNotFound)
    channel.given().when(send()).raises(ch.ChannelNotFound)


def test_mentions_keep_members_only_and_replies_name_their_author() -> None:
    state = (*PUBLIC, joined(BOB), sent(1, author=BOB))
    channel.given(*state).when(
        send(reply_to="m1", mentioned=(BOB, EVE, ANN, BOB), message_id="m2")
    ).then(
        MessageSent(channel_id=C, message_id="m2", seq=2, author_id=ANN, text="hi",
                    reply_to="m1", reply_to_author_id=BOB, mentions=(BOB,), sent_at=AT)
    )  # fmt: skip
    channel.given(*state).when(send(reply_to="nope")).raises(ch.ReplyToUnknown)


def test_only_the_author_edits_and_not_a_deleted_message() -> None:
    state = (*PUBLIC, joined(BOB), sent(1))
    channel.given(*state).when(ch.Edit(actor_id=ANN, message_id="m1", text="new", at=AT)).then(
        MessageEdited(channel_id=C, message_id="m1", seq=1, text="new", edited_at=AT)
    )
    channel.given(*state).when(ch.Edit(actor_id=BOB, message_id="m1", text="x", at=AT)).raises(
        ch.NotTheAuthor
    )
    channel.given(*state).when(ch.Edit(actor_id=ANN, message_id="m7", text="x", at=AT)).raises(
        ch.MessageNotFound
    )
    deleted = MessageDeleted(channel_id=C, message_id="m1", seq=1, deleted_by=ANN, deleted_at=AT)
    channel.given(*state, deleted).when(
        ch.Edit(actor_id=ANN, message_id="m1", text="x", at=AT)
    ).raises(ch.MessageGone)


def test_author_owner_or_admin_deletes_a_message_once() -> None:
    state = (*PUBLIC, joined(BOB), sent(1))

    def delete(actor: str, admin: bool = False) -> ch.DeleteMessage:
        return ch.DeleteMessage(actor_id=actor, actor_is_admin=admin, message_id="m1", at=AT)

    def deleted(by: str) -> MessageDeleted:
        return MessageDeleted(channel_id=C, message_id="m1", seq=1, deleted_by=by, deleted_at=AT)

    channel.given(*state).when(delete(ANN)).then(deleted(ANN))
    channel.given(*state).when(delete(OWNER)).then(deleted(OWNER))
    channel.given(*state).when(delete(EVE, admin=True)).then(deleted(EVE))
    channel.given(*state).when(delete(BOB)).raises(ch.NotAllowed)
    channel.given(*state, deleted(ANN)).when(delete(ANN)).then()


def test_reactions_are_once_per_user_and_emoji() -> None:
    state = (*PUBLIC, sent(1))
    added = ReactionAdded(channel_id=C, message_id="m1", seq=1, user_id=ANN, emoji="👍",
                          reacted_at=AT)  # fmt: skip
    react = ch.React(actor_id=ANN, message_id="m1", emoji="👍", at=AT)
    unreact = ch.Unreact(actor_id=ANN, message_id="m1", emoji="👍", at=AT)
    channel.given(*state).when(react).then(added)
    channel.given(*state, added).when(react).then()
    channel.given(*state, added).when(unreact).then(
        ReactionRemoved(channel_id=C, message_id="m1", seq=1, user_id=ANN, emoji="👍",
                        removed_at=AT)
    )  # fmt: skip
    channel.given(*state).when(unreact).then()
    channel.given(*state).when(ch.React(actor_id=BOB, message_id="m1", emoji="👍", at=AT)).raises(
        ch.NotAMember
    )


def test_receipts_only_move_forward_and_reading_implies_delivery() -> None:
    state = (*PUBLIC, joined(BOB), sent(1), sent(2), sent(3))
    channel.given(*state).when(ch.MarkRead(actor_id=BOB, message_id="m2", at=AT)).then(
        MessagesRead(channel_id=C, user_id=BOB, message_id="m2", seq=2, read_at=AT)
    )
    read2 = MessagesRead(channel_id=C, user_id=BOB, message_id="m2", seq=2, read_at=AT)
    channel.given(*state, read2).when(ch.MarkRead(actor_id=BOB, message_id="m1", at=AT)).then()
    channel.given(*state, read2).when(ch.MarkDelivered(actor_id=BOB, message_id="m2", at=AT)).then()
    channel.given(*state, read2).when(ch.MarkDelivered(actor_id=BOB, message_id="m3", at=AT)).then(
        MessagesDelivered(channel_id=C, user_id=BOB, message_id="m3", seq=3, delivered_at=AT)
    )
    # the author has read what it sent
    channel.given(*state).when(ch.MarkRead(actor_id=ANN, message_id="m3", at=AT)).then()


# -- direct channels ----------------------------------------------------------------------


def test_a_pair_gets_one_direct_channel() -> None:
    opened = DirectChannelOpened(channel_id="d1", user_ids=(ANN, BOB))
    command = guard.OpenDirect(actor_id=BOB, other_id=ANN, channel_id="d1", at=AT)
    pairs.given().when(command).then(
        opened,
        ChannelCreated(channel_id="d1", kind="direct", name="", visibility="private",
                       created_at=AT),
        MemberJoined(channel_id="d1", user_id=ANN, role="member", joined_at=AT),
        MemberJoined(channel_id="d1", user_id=BOB, role="member", joined_at=AT),
    )  # fmt: skip
    pairs.given(opened).when(command).then()
    pairs.given().when(guard.OpenDirect(actor_id=ANN, other_id=ANN, channel_id="d1", at=AT)).raises(
        guard.NoSelfChannel
    )


def test_a_direct_channel_cannot_be_joined_left_or_deleted() -> None:
    d = (
        ChannelCreated(channel_id=C, kind="direct", name="", visibility="private", created_at=AT),
        joined(ANN),
        joined(BOB),
    )
    channel.given(*d).when(ch.Leave(actor_id=ANN, at=AT)).raises(ch.DirectChannel)
    channel.given(*d).when(ch.Join(actor_id=EVE, password_ok=True, at=AT)).raises(
        ch.ChannelNotFound
    )
    channel.given(*d).when(ch.DeleteChannel(actor_id=ANN, actor_is_admin=True, at=AT)).raises(
        ch.DirectChannel
    )
    channel.given(*d).when(send(BOB, message_id="m1")).then(
        MessageSent(channel_id=C, message_id="m1", seq=1, author_id=BOB, text="hi", sent_at=AT)
    )
