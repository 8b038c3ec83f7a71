"""Chat commands over real HTTP against a real store: every endpoint, with its bad inputs."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import msgspec
import pytest
from psycopg_pool import AsyncConnectionPool

from events.user import RoleGranted, user_stream
from infra.store import ANY, EventStore, StreamAppend
from tests.fix_chat import User, create_channel, join, say, users
from tests.fix_events import new_event
from tests.fix_stack import Stack
from tests.integration.test_register_slice import assert_problem

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def stream_types(pool: AsyncConnectionPool, stream: str) -> list[str]:
    return [e.type for e in await EventStore(pool).read_stream(stream)]


async def make_admin(store: EventStore, user: User) -> None:
    granted = RoleGranted(
        user_id=user.id, role="admin", granted_by="cli", granted_at=datetime.now(UTC)
    )
    await store.append([StreamAppend(user_stream(user.id), ANY, [new_event(granted)])])


async def test_channel_lifecycle_and_its_refusals(stack: Stack, pool: AsyncConnectionPool) -> None:
    store = EventStore(pool)
    owner, ann, eve = await users(stack, store, 3)
    w = stack.write
    name = f"General-{uuid.uuid4().hex[:8]}"
    r = await w.post("/v1/channels", json={"name": name, "visibility": "public", "topic": "t"},
                     headers=owner.headers)  # fmt: skip
    assert r.status_code == 201, r.text
    cid = r.json()["channel_id"]
    assert r.headers["X-Position"] == r.json()["position"]
    uuid.UUID(cid)
    # names are unique among live channels, regardless of case
    taken = await w.post("/v1/channels", json={"name": name.upper(), "visibility": "public"},
                         headers=ann.headers)  # fmt: skip
    assert_problem(taken, 409, "channel_name_taken")
    for bad in ({"name": "", "visibility": "public"}, {"name": "x" * 65, "visibility": "public"},
                {"name": "   ", "visibility": "public"}, {"name": "x", "visibility": "secret"},
                {"name": "x"}, {"name": "x", "visibility": "public", "colour": "red"},
                {"name": "x", "visibility": "public", "password": ""}):  # fmt: skip
        assert_problem(
            await w.post("/v1/channels", json=bad, headers=ann.headers), 400, "validation_failed"
        )
    assert_problem(
        await w.post("/v1/channels", content=b"{nope", headers=ann.headers), 400, "malformed_json"
    )
    assert_problem(
        await w.post("/v1/channels", json={"name": "x", "visibility": "public"}),
        401,
        "unauthorized",
    )

    await join(w, cid, ann)
    assert_problem(
        await w.post(f"/v1/channels/{cid}/join", headers=ann.headers), 409, "already_member"
    )
    assert_problem(
        await w.post(f"/v1/channels/{uuid.uuid4()}/join", headers=ann.headers),
        404,
        "channel_not_found",
    )
    assert_problem(
        await w.post("/v1/channels/not-a-uuid/join", headers=ann.headers), 404, "channel_not_found"
    )
    left = await w.post(f"/v1/channels/{cid}/leave", headers=ann.headers)
    assert left.status_code == 200, left.text
    assert_problem(await w.post(f"/v1/channels/{cid}/messages", json={"text": "hi"}, headers=ann.headers),
                   403, "not_a_member")  # fmt: skip
    assert_problem(
        await w.post(f"/v1/channels/{cid}/leave", headers=ann.headers), 403, "not_a_member"
    )

    assert_problem(await w.delete(f"/v1/channels/{cid}", headers=eve.headers), 403, "forbidden")
    gone = await w.delete(f"/v1/channels/{cid}", headers=owner.headers)
    assert gone.status_code == 200, gone.text
    assert_problem(
        await w.delete(f"/v1/channels/{cid}", headers=owner.headers), 404, "channel_not_found"
    )
    assert_problem(await w.post(f"/v1/channels/{cid}/messages", json={"text": "hi"}, headers=owner.headers),
                   404, "channel_not_found")  # fmt: skip
    assert_problem(
        await w.post(f"/v1/channels/{cid}/join", headers=eve.headers), 404, "channel_not_found"
    )
    # the name is free again
    again = await w.post(
        "/v1/channels", json={"name": name, "visibility": "private"}, headers=eve.headers
    )
    assert again.status_code == 201, again.text
    assert await stream_types(pool, f"channel-{cid}") == [
        "ChannelCreated", "MemberJoined", "MemberJoined", "MemberLeft", "ChannelDeleted",
    ]  # fmt: skip


async def test_passwords_private_channels_and_invites(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    store = EventStore(pool)
    owner, ann, bob, eve = await users(stack, store, 4)
    w = stack.write
    guarded = await create_channel(w, owner, password="open sesame")
    url = f"/v1/channels/{guarded}/join"
    assert_problem(await w.post(url, headers=ann.headers), 403, "wrong_password")
    assert_problem(
        await w.post(url, json={"password": "nope"}, headers=ann.headers), 403, "wrong_password"
    )
    assert_problem(
        await w.post(url, json={"password": 5}, headers=ann.headers), 400, "validation_failed"
    )
    ok = await w.post(url, json={"password": "open sesame"}, headers=ann.headers)
    assert ok.status_code == 200, ok.text

    private = await create_channel(w, owner, "private")
    assert_problem(
        await w.post(f"/v1/channels/{private}/join", headers=bob.headers), 404, "channel_not_found"
    )
    invites = f"/v1/channels/{private}/invites"
    assert_problem(
        await w.post(invites, json={"user_id": bob.id}, headers=eve.headers),
        404,
        "channel_not_found",
    )
    assert_problem(
        await w.post(invites, json={"user_id": str(uuid.uuid4())}, headers=owner.headers),
        404,
        "user_not_found",
    )
    assert_problem(
        await w.post(invites, json={"user_id": "x"}, headers=owner.headers), 404, "user_not_found"
    )
    assert_problem(await w.post(invites, json={}, headers=owner.headers), 400, "validation_failed")
    assert_problem(
        await w.post(invites, json={"user_id": owner.id}, headers=owner.headers),
        409,
        "already_member",
    )
    r = await w.post(invites, json={"user_id": bob.id}, headers=owner.headers)
    assert r.status_code == 201, r.text
    await join(w, private, bob)
    # a member who is not the owner may not invite; an admin who is a member may
    assert_problem(
        await w.post(invites, json={"user_id": eve.id}, headers=bob.headers), 403, "forbidden"
    )
    await make_admin(store, bob)
    r = await w.post(invites, json={"user_id": eve.id}, headers=bob.headers)
    assert r.status_code == 201, r.text
    # an admin deletes a channel it does not own
    r = await w.delete(f"/v1/channels/{guarded}", headers=bob.headers)
    assert r.status_code == 200, r.text


async def test_messages_edits_deletes_reactions_and_receipts(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    store = EventStore(pool)
    owner, ann, bob, eve = await users(stack, store, 4)
    w = stack.write
    cid = await create_channel(w, owner)
    await join(w, cid, ann, bob)
    msgs = f"/v1/channels/{cid}/messages"
    first = await say(w, cid, ann, "hello")
    assert first["seq"] == 1 and {"message_id", "position"} <= first.keys()
    assert (await say(w, cid, bob, "x" * 4000))["seq"] == 2
    for bad in ({"text": ""}, {"text": "x" * 4001}, {}, {"text": 7}, {"text": "hi", "extra": 1}):
        assert_problem(await w.post(msgs, json=bad, headers=ann.headers), 400, "validation_failed")
    assert_problem(
        await w.post(msgs, json={"text": "hi"}, headers=eve.headers), 403, "not_a_member"
    )
    assert_problem(await w.post(f"/v1/channels/{uuid.uuid4()}/messages", json={"text": "hi"},
                                headers=ann.headers), 404, "channel_not_found")  # fmt: skip
    assert_problem(await w.post(msgs, json={"text": "hi", "reply_to": str(uuid.uuid4())},
                                headers=ann.headers), 422, "reply_to_not_found")  # fmt: skip
    assert_problem(await w.post(msgs, json={"text": "hi", "reply_to": "zzz"}, headers=ann.headers),
                   422, "reply_to_not_found")  # fmt: skip
    reply = await w.post(msgs, json={"text": f"@{ann.username} yes", "reply_to": first["message_id"]},
                         headers=bob.headers)  # fmt: skip
    assert reply.status_code == 201 and reply.json()["seq"] == 3

    mid = first["message_id"]
    one = f"{msgs}/{mid}"
    assert (
        await w.patch(one, json={"text": "hello again"}, headers=ann.headers)
    ).status_code == 200
    assert_problem(
        await w.patch(one, json={"text": "mine now"}, headers=bob.headers), 403, "not_author"
    )
    assert_problem(
        await w.patch(one, json={"text": ""}, headers=ann.headers), 400, "validation_failed"
    )
    assert_problem(await w.patch(f"{msgs}/{uuid.uuid4()}", json={"text": "x"}, headers=ann.headers),
                   404, "message_not_found")  # fmt: skip

    react = f"{one}/reactions"
    assert (await w.post(react, json={"emoji": "👍"}, headers=bob.headers)).status_code == 201
    assert (await w.post(react, json={"emoji": "👍"}, headers=bob.headers)).status_code == 201
    assert_problem(
        await w.post(react, json={"emoji": "a b"}, headers=bob.headers), 400, "validation_failed"
    )
    assert_problem(
        await w.post(react, json={"emoji": "👍"}, headers=eve.headers), 403, "not_a_member"
    )
    assert (await w.delete(f"{react}/👍", headers=bob.headers)).status_code == 200
    assert (await w.delete(f"{react}/👍", headers=bob.headers)).status_code == 200

    for receipt in ("read", "delivered"):
        url = f"/v1/channels/{cid}/{receipt}"
        assert (
            await w.post(url, json={"message_id": mid}, headers=owner.headers)
        ).status_code == 200
        assert_problem(await w.post(url, json={"message_id": str(uuid.uuid4())}, headers=owner.headers),
                       404, "message_not_found")  # fmt: skip
        assert_problem(await w.post(url, json={}, headers=owner.headers), 400, "validation_failed")
        assert_problem(
            await w.post(url, json={"message_id": mid}, headers=eve.headers), 403, "not_a_member"
        )

    assert_problem(await w.delete(one, headers=bob.headers), 403, "forbidden")
    assert (await w.delete(one, headers=owner.headers)).status_code == 200  # the channel's owner
    assert (await w.delete(one, headers=ann.headers)).status_code == 200  # already gone: nothing
    assert_problem(
        await w.patch(one, json={"text": "back"}, headers=ann.headers), 409, "message_deleted"
    )
    assert_problem(
        await w.post(react, json={"emoji": "👍"}, headers=bob.headers), 409, "message_deleted"
    )

    types = await stream_types(pool, f"channel-{cid}")
    assert types.count("MessageSent") == 3 and types.count("ReactionAdded") == 1
    assert types.count("ReactionRemoved") == 1 and types.count("MessageDeleted") == 1
    assert (
        types.count("MessagesRead") == 1 and types.count("MessagesDelivered") == 0
    )  # read implies it
    sent = [
        e for e in await EventStore(pool).read_stream(f"channel-{cid}") if e.type == "MessageSent"
    ]
    assert b'"mentions":["' + ann.id.encode() + b'"]' in sent[2].data
    assert b'"reply_to_author_id":"' + ann.id.encode() + b'"' in sent[2].data


async def test_idempotency_keys_on_chat_commands(stack: Stack, pool: AsyncConnectionPool) -> None:
    store = EventStore(pool)
    owner, ann = await users(stack, store, 2)
    w = stack.write
    cid = await create_channel(w, owner)
    msgs = f"/v1/channels/{cid}/messages"
    # concurrent retries of one request: one message, the same answer for all
    answers = await asyncio.gather(*(w.post(msgs, json={"text": "once"}, headers=owner.key("k1"))
                                     for _ in range(5)))  # fmt: skip
    assert {r.status_code for r in answers} == {201}
    assert len({(r.json()["message_id"], r.json()["position"]) for r in answers}) == 1
    assert_problem(await w.post(msgs, json={"text": "other"}, headers=owner.key("k1")), 422,
                   "idempotency_key_reused")  # fmt: skip
    # the key is the caller's: another user may use the same string
    await join(w, cid, ann)
    assert (await w.post(msgs, json={"text": "once"}, headers=ann.key("k1"))).status_code == 201
    assert_problem(
        await w.post(msgs, json={"text": "x"}, headers=ann.key("")), 400, "invalid_idempotency_key"
    )
    types = await stream_types(pool, f"channel-{cid}")
    assert types.count("MessageSent") == 2
    first = await w.post(
        "/v1/channels", json={"name": "same-key", "visibility": "public"}, headers=owner.key("c")
    )
    again = await w.post(
        "/v1/channels", json={"name": "same-key", "visibility": "public"}, headers=owner.key("c")
    )
    assert first.json() == again.json() and again.status_code == 201


async def test_direct_channels_are_one_per_pair_and_closed_to_others(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    store = EventStore(pool)
    ann, bob, eve = await users(stack, store, 3)
    w = stack.write
    opened = await asyncio.gather(
        *(w.post("/v1/dms", json={"user_id": (bob if i % 2 else ann).id},
                 headers=(ann if i % 2 else bob).headers) for i in range(8))
    )  # fmt: skip
    assert {r.status_code for r in opened} == {200}, [r.text for r in opened]
    ids = {r.json()["channel_id"] for r in opened}
    assert len(ids) == 1
    (cid,) = ids
    assert (await say(w, cid, ann, f"hi @{bob.username}"))["seq"] == 1
    assert (await say(w, cid, bob))["seq"] == 2
    assert_problem(await w.post(f"/v1/channels/{cid}/messages", json={"text": "me too"}, headers=eve.headers),
                   404, "channel_not_found")  # fmt: skip
    assert_problem(
        await w.post(f"/v1/channels/{cid}/join", headers=eve.headers), 404, "channel_not_found"
    )
    assert_problem(
        await w.post(f"/v1/channels/{cid}/leave", headers=ann.headers), 409, "direct_channel"
    )
    assert_problem(
        await w.delete(f"/v1/channels/{cid}", headers=ann.headers), 409, "direct_channel"
    )
    assert_problem(await w.post(f"/v1/channels/{cid}/invites", json={"user_id": eve.id}, headers=ann.headers),
                   409, "direct_channel")  # fmt: skip
    assert_problem(
        await w.post("/v1/dms", json={"user_id": ann.id}, headers=ann.headers), 422, "invalid_user"
    )
    assert_problem(
        await w.post("/v1/dms", json={"user_id": str(uuid.uuid4())}, headers=ann.headers),
        404,
        "user_not_found",
    )
    assert_problem(
        await w.post("/v1/dms", json={"user_id": "nope"}, headers=ann.headers),
        404,
        "user_not_found",
    )
    assert_problem(await w.post("/v1/dms", json={}, headers=ann.headers), 400, "validation_failed")
    assert (
        len([s for s in await stream_types(pool, f"channel-{cid}") if s == "ChannelCreated"]) == 1
    )


async def test_a_hot_channel_with_200_concurrent_senders(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    """Every acknowledged message appears exactly once, numbered 1..200 in the stream's order."""
    store = EventStore(pool)
    senders = await users(stack, store, 200)
    owner = senders[0]
    cid = await create_channel(stack.write, owner)
    await asyncio.gather(*(join(stack.write, cid, s) for s in senders[1:]))
    start = asyncio.Event()

    async def send(user: User, n: int) -> dict[str, object]:
        await start.wait()
        return await say(stack.write, cid, user, f"message {n} from {user.id}")

    tasks = [asyncio.create_task(send(u, n)) for n, u in enumerate(senders)]
    start.set()
    acks = await asyncio.gather(*tasks)
    assert sorted(a["seq"] for a in acks) == list(range(1, 201))  # type: ignore[type-var]
    recorded = [e for e in await store.read_stream(f"channel-{cid}") if e.type == "MessageSent"]
    assert len(recorded) == 200
    sent = [msgspec.json.decode(e.data) for e in recorded]
    assert {m["message_id"] for m in sent} == {a["message_id"] for a in acks}
    assert [m["seq"] for m in sent] == list(range(1, 201))  # the stream's order is the seq order
