"""The chat read models (channels, messages, notifications) and the read API over them,
fed by chat events appended straight to the store, read over real HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from infra.store import EventStore
from tests.fix_stack import Stack
from tests.integration.chat_log import ChatLog, User, signed_in
from tests.integration.test_register_slice import assert_problem

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def get(stack: Stack, log: ChatLog, user: User, path: str, **params: Any) -> httpx.Response:
    """GET from the read API as `user`, once it has applied everything appended so far."""
    headers = {**user.auth, "X-Min-Position": log.position}
    return await stack.read.get(path, params=params, headers=headers)


async def ok(stack: Stack, log: ChatLog, user: User, path: str, **params: Any) -> Any:
    r = await get(stack, log, user, path, **params)
    assert r.status_code == 200, r.text
    assert r.headers["X-Projection-Position"] >= log.position
    return r.json()


async def test_channels_members_and_counts(stack: Stack, pool: AsyncConnectionPool) -> None:
    log = ChatLog(EventStore(pool))
    ann, bob, cy = [await signed_in(stack.write) for _ in range(3)]
    general = await log.channel(ann.user_id, name="General", topic="all things", password=True)
    await log.join(general, bob.user_id)
    await log.join(general, cy.user_id)
    await log.leave(general, cy.user_id)
    await log.send(general, bob.user_id, "hello")

    channel = await ok(stack, log, bob, f"/v1/channels/{general}")
    assert channel == {
        "channel_id": general, "kind": "group", "name": "General", "topic": "all things",
        "visibility": "public", "member_count": 2, "last_message_at": channel["last_message_at"],
        "created_at": channel["created_at"], "has_password": True, "owner_id": ann.user_id,
        "last_seq": 1, "is_member": True,
    }  # fmt: skip
    assert channel["last_message_at"] > channel["created_at"]
    assert channel["created_at"].endswith("Z")
    assert "argon2" not in str(channel)

    # a public channel is readable by someone who is not in it, who sees it in the directory
    outside = await ok(stack, log, cy, f"/v1/channels/{general}")
    assert outside["is_member"] is False
    public = await ok(stack, log, cy, "/v1/channels", scope="public")
    assert [c["channel_id"] for c in public["items"]] == [general]
    assert public["next_cursor"] is None
    assert (await ok(stack, log, cy, "/v1/channels"))["items"] == []  # joined is the default
    [mine] = (await ok(stack, log, bob, "/v1/channels", scope="joined"))["items"]
    assert mine == {
        k: v for k, v in channel.items() if k not in ("owner_id", "last_seq", "is_member")
    }

    members = await ok(stack, log, cy, f"/v1/channels/{general}/members")
    assert [(m["user_id"], m["role"]) for m in members["items"]] == [
        (ann.user_id, "owner"), (bob.user_id, "member")
    ]  # fmt: skip
    assert members["next_cursor"] is None and members["items"][0]["joined_at"].endswith("Z")

    await log.delete_channel(general, ann.user_id)
    for path in (f"/v1/channels/{general}", f"/v1/channels/{general}/members",
                 f"/v1/channels/{general}/messages"):  # fmt: skip
        assert_problem(await get(stack, log, ann, path), 404, "channel_not_found")
    assert (await ok(stack, log, ann, "/v1/channels"))["items"] == []
    assert (await ok(stack, log, ann, "/v1/channels", scope="public"))["items"] == []


async def test_messages_edits_deletions_and_reactions(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    log = ChatLog(EventStore(pool))
    ann, bob = [await signed_in(stack.write) for _ in range(2)]
    room = await log.channel(ann.user_id)
    await log.join(room, bob.user_id)
    first = await log.send(room, ann.user_id, "first")
    second = await log.send(room, bob.user_id, "second", reply_to=first.message_id,
                            reply_to_author_id=ann.user_id)  # fmt: skip
    third = await log.send(room, ann.user_id, "third")
    await log.edit(first, "first, edited")
    await log.react(second, ann.user_id, "👍")
    await log.delete(second, bob.user_id)
    await log.react(third, ann.user_id, "🎉")
    await log.react(third, bob.user_id, "🎉")
    await log.react(third, bob.user_id, "👀")
    await log.react(third, ann.user_id, "🎉", remove=True)

    page = await ok(stack, log, bob, f"/v1/channels/{room}/messages")
    assert page["next_cursor"] is None
    one, two, three = page["items"]
    assert [m["seq"] for m in page["items"]] == [1, 2, 3]
    assert one["text"] == "first, edited" and one["edited_at"] is not None
    assert one["deleted"] is False and one["reactions"] == [] and one["author_id"] == ann.user_id
    assert two == {
        "message_id": second.message_id, "seq": 2, "author_id": bob.user_id,
        "reply_to": first.message_id, "sent_at": two["sent_at"], "edited_at": None,
        "deleted": True, "erased": False, "reactions": [],
    }  # fmt: skip
    assert "text" not in two and "status" not in two  # not a direct channel
    assert three["text"] == "third" and three["edited_at"] is None
    assert three["reactions"] == [
        {"emoji": "🎉", "count": 1, "me": True}, {"emoji": "👀", "count": 1, "me": True}
    ]  # fmt: skip
    as_ann = await ok(stack, log, ann, f"/v1/channels/{room}/messages")
    assert as_ann["items"][2]["reactions"] == [
        {"emoji": "🎉", "count": 1, "me": False}, {"emoji": "👀", "count": 1, "me": False}
    ]  # fmt: skip

    # an edit of a deleted message, or a reaction to one, changes nothing
    await log.edit(second, "back from the dead")
    await log.react(second, ann.user_id, "👻")
    again = await ok(stack, log, bob, f"/v1/channels/{room}/messages")
    assert again["items"][1] == two


async def test_message_pages_before_after_and_cursors(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    log = ChatLog(EventStore(pool))
    ann = await signed_in(stack.write)
    room = await log.channel(ann.user_id)
    await log.append(*(log.message(room, ann.user_id, f"m{i}") for i in range(1, 8)))
    path = f"/v1/channels/{room}/messages"

    async def seqs(**params: Any) -> tuple[list[int], str | None]:
        body = await ok(stack, log, ann, path, **params)
        return [m["seq"] for m in body["items"]], body["next_cursor"]

    # neither: the newest, then older pages through the cursor, each ascending
    newest, cursor = await seqs(limit=3)
    assert newest == [5, 6, 7] and cursor
    older, cursor = await seqs(limit=3, cursor=cursor)
    assert older == [2, 3, 4] and cursor
    assert await seqs(limit=3, cursor=cursor) == ([1], None)
    # after: oldest first, then newer
    forward, cursor = await seqs(after=2, limit=2)
    assert forward == [3, 4] and cursor
    forward, cursor = await seqs(limit=2, cursor=cursor)
    assert forward == [5, 6] and cursor
    assert await seqs(limit=2, cursor=cursor) == ([7], None)
    assert await seqs(after=7) == ([], None)
    # before: the ones just below
    assert (await seqs(before=5, limit=2))[0] == [3, 4]
    assert await seqs(before=3) == ([1, 2], None)
    # both: the range between, still paged forward within it
    between, cursor = await seqs(after=1, before=6, limit=3)
    assert between == [2, 3, 4] and cursor
    assert await seqs(limit=3, cursor=cursor) == ([5], None)
    assert await seqs() == ([1, 2, 3, 4, 5, 6, 7], None)

    for params in ({"before": "x"}, {"after": "1.5"}, {"after": "-1"}, {"limit": "0"},
                   {"limit": "201"}, {"limit": "many"}):  # fmt: skip
        body = assert_problem(await get(stack, log, ann, path, **params), 400, "validation_failed")
        assert body["errors"], body
    for bad in ("nope", "e30", "WyJhZnRlciIsLTEsMl0", "WyJzaWRld2F5cyIsMSwyXQ"):
        assert_problem(await get(stack, log, ann, path, cursor=bad), 400, "invalid_cursor")
    _, cursor = await seqs(limit=3)
    assert_problem(
        await get(stack, log, ann, path, cursor=cursor, before=3), 400, "validation_failed"
    )


async def test_channel_and_member_lists_page_with_cursors(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    log = ChatLog(EventStore(pool))
    ann, bob = [await signed_in(stack.write) for _ in range(2)]
    names = ["delta", "Alpha", "charlie", "Echo", "bravo"]
    ids = [await log.channel(ann.user_id, name=n) for n in names]
    for channel_id in ids:
        await log.join(channel_id, bob.user_id)
    private = await log.channel(ann.user_id, visibility="private")
    dm = await log.direct(ann.user_id, bob.user_id)

    async def walk(user: User, path: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            extra = {"cursor": cursor} if cursor else {}
            body = await ok(stack, log, user, path, limit=2, **params, **extra)
            assert len(body["items"]) <= 2
            items += body["items"]
            if (cursor := body["next_cursor"]) is None:
                return items

    public = await walk(bob, "/v1/channels", scope="public")
    assert [c["name"] for c in public] == ["Alpha", "bravo", "charlie", "delta", "Echo"]
    joined = await walk(ann, "/v1/channels")
    assert [c["channel_id"] for c in joined] == [*ids, private, dm]  # id (creation) order
    assert joined[-1]["member_ids"] == sorted([ann.user_id, bob.user_id])
    assert joined[-1]["kind"] == "direct" and joined[-1]["name"] is None
    assert all("member_ids" not in c for c in joined[:-1])
    assert [c["channel_id"] for c in await walk(bob, "/v1/channels")] == [*ids, dm]

    users = [await signed_in(stack.write) for _ in range(3)]
    for user in users:
        await log.join(ids[0], user.user_id)
    members = await walk(bob, f"/v1/channels/{ids[0]}/members")
    assert [m["user_id"] for m in members] == [ann.user_id, bob.user_id] + [
        u.user_id for u in users
    ]

    for params in ({"limit": "0"}, {"limit": "201"}, {"scope": "everything"}):
        assert_problem(
            await get(stack, log, ann, "/v1/channels", **params), 400, "validation_failed"
        )
    for path, params in (("/v1/channels", {}), ("/v1/channels", {"scope": "public"}),
                         (f"/v1/channels/{ids[0]}/members", {})):  # fmt: skip
        for bad in ("%%%", "bm90IGpzb24", "WzEsMl0"):
            r = await get(stack, log, ann, path, cursor=bad, **params)
            assert_problem(r, 400, "invalid_cursor")


async def test_direct_channels_show_sent_delivered_and_read(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    log = ChatLog(EventStore(pool))
    ann, bob, eve = [await signed_in(stack.write) for _ in range(3)]
    dm = await log.direct(ann.user_id, bob.user_id)
    one, two, _ = [await log.send(dm, ann.user_id, f"hi {i}") for i in range(3)]
    await log.receipt(two, bob.user_id, read=False)
    await log.receipt(one, bob.user_id, read=True)
    path = f"/v1/channels/{dm}/messages"

    async def statuses(user: User) -> list[str]:
        return [m["status"] for m in (await ok(stack, log, user, path))["items"]]

    assert await statuses(ann) == ["read", "delivered", "sent"]
    assert await statuses(bob) == ["read", "delivered", "sent"]  # the same messages, seen by bob
    reply = await log.send(dm, bob.user_id, "hello ann")  # sending reads what came before
    assert await statuses(ann) == ["read", "read", "read", "sent"]
    await log.receipt(reply, ann.user_id, read=False)
    assert (await statuses(bob))[-1] == "delivered"
    await log.receipt(reply, ann.user_id, read=True)
    assert (await statuses(bob))[-1] == "read"
    await log.receipt(one, ann.user_id, read=True)  # receipts never go back
    assert (await statuses(bob))[-1] == "read"

    channel = await ok(stack, log, ann, f"/v1/channels/{dm}")
    assert channel["kind"] == "direct" and channel["visibility"] == "private"
    assert channel["member_ids"] == sorted([ann.user_id, bob.user_id])
    assert channel["member_count"] == 2 and channel["owner_id"] is None
    # a third user cannot tell it exists
    for sub in ("", "/members", "/messages"):
        assert_problem(
            await get(stack, log, eve, f"/v1/channels/{dm}{sub}"), 404, "channel_not_found"
        )
    assert (await ok(stack, log, eve, "/v1/channels"))["items"] == []
    assert (await ok(stack, log, eve, "/v1/channels", scope="public"))["items"] == []


async def test_unread_counts(stack: Stack, pool: AsyncConnectionPool) -> None:
    log = ChatLog(EventStore(pool))
    ann, bob = [await signed_in(stack.write) for _ in range(2)]
    room = await log.channel(ann.user_id)
    await log.send(room, ann.user_id, "before bob came")  # history is not unread to a joiner
    await log.join(room, bob.user_id)
    quiet = await log.channel(ann.user_id)
    await log.join(quiet, bob.user_id)
    messages = [await log.send(room, ann.user_id, f"m{i}") for i in range(4)]
    await log.send(room, bob.user_id, "mine do not count")  # ... and it reads everything
    assert await ok(stack, log, bob, "/v1/me/unread") == []
    more = [await log.send(room, ann.user_id, f"n{i}") for i in range(3)]
    await log.delete(more[0], ann.user_id)
    assert await ok(stack, log, bob, "/v1/me/unread") == [
        {"channel_id": room, "unread_count": 2, "last_read_seq": 6}
    ]
    await log.receipt(more[1], bob.user_id, read=True)
    assert await ok(stack, log, bob, "/v1/me/unread") == [
        {"channel_id": room, "unread_count": 1, "last_read_seq": 8}
    ]
    assert await ok(stack, log, ann, "/v1/me/unread") == []
    await log.delete_channel(room, ann.user_id)
    assert await ok(stack, log, bob, "/v1/me/unread") == []
    assert messages  # (the first messages are there, read by sending)


async def test_notifications_for_invites_mentions_and_replies(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    log = ChatLog(EventStore(pool))
    ann, bob, cy = [await signed_in(stack.write) for _ in range(3)]
    secret = await log.channel(ann.user_id, visibility="private")
    await log.invite(secret, cy.user_id, ann.user_id)
    [invite] = (await ok(stack, log, cy, "/v1/me/notifications"))["items"]
    assert invite == {
        "notification_id": invite["notification_id"], "kind": "invited", "channel_id": secret,
        "message_id": None, "seq": None, "actor_id": ann.user_id,
        "created_at": invite["created_at"], "read": False, "auction_id": None, "amount": None, "currency": None,
    }  # fmt: skip
    await log.join(secret, cy.user_id)
    await log.join(secret, bob.user_id)
    assert (await ok(stack, log, cy, "/v1/me/notifications"))["items"][0]["read"] is True

    hello = await log.send(secret, bob.user_id, "hi @ann @cy @bob",
                           mentions=(ann.user_id, cy.user_id, bob.user_id))  # fmt: skip
    answer = await log.send(secret, ann.user_id, "@bob yes", reply_to=hello.message_id,
                            reply_to_author_id=bob.user_id, mentions=(bob.user_id,))  # fmt: skip
    await log.send(secret, ann.user_id, "self @ann", reply_to=answer.message_id,
                   reply_to_author_id=ann.user_id, mentions=(ann.user_id,))  # fmt: skip

    async def kinds(user: User, **params: Any) -> list[tuple[str, int | None, bool]]:
        body = await ok(stack, log, user, "/v1/me/notifications", **params)
        return [(n["kind"], n["seq"], n["read"]) for n in body["items"]]

    # one notification for a reply that also mentions; none for oneself; ann read up to 2
    # by answering
    assert await kinds(bob) == [("reply", 2, False)]
    assert await kinds(ann) == [("mentioned", 1, True)]
    assert await kinds(cy) == [("mentioned", 1, False), ("invited", None, True)]
    assert await kinds(cy, unread_only="true") == [("mentioned", 1, False)]
    await log.receipt(answer, cy.user_id, read=True)
    assert await kinds(cy, unread_only="true") == []
    await log.receipt(hello, bob.user_id, read=True)  # not far enough for the reply at 2
    assert await kinds(bob) == [("reply", 2, False)]
    [mention] = (await ok(stack, log, cy, "/v1/me/notifications", limit=1))["items"]
    assert mention["message_id"] == hello.message_id and mention["actor_id"] == bob.user_id

    first = await ok(stack, log, cy, "/v1/me/notifications", limit=1)
    assert first["next_cursor"]
    second = await ok(stack, log, cy, "/v1/me/notifications", limit=1, cursor=first["next_cursor"])
    assert [n["kind"] for n in second["items"]] == ["invited"] and second["next_cursor"] is None
    for bad in ("x", "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwiYSJd"):  # the latter: a time without zone
        r = await get(stack, log, cy, "/v1/me/notifications", cursor=bad)
        assert_problem(r, 400, "invalid_cursor")
    r = await get(stack, log, cy, "/v1/me/notifications", unread_only="perhaps")
    assert_problem(r, 400, "validation_failed")
