"""The chat slice end to end: commands on the write API, then the read API shows them
(read-your-writes through X-Min-Position), over real HTTP, PostgreSQL and NATS."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from infra.store import EventStore
from tests.fix_chat import User, create_channel, users
from tests.fix_stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Client:
    """One user's view: writes remember their position, reads wait for it."""

    def __init__(self, stack: Stack, user: User) -> None:
        self.stack, self.user, self.position = stack, user, ""

    async def write(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        r = await self.stack.write.request(method, path, json=body, headers=self.user.headers)
        assert r.status_code in (200, 201), r.text
        out: dict[str, Any] = r.json()
        self.position = out["position"]
        return out

    async def read(self, path: str, after: Client | None = None, **params: Any) -> Any:
        position = (after or self).position
        r: httpx.Response = await self.stack.read.get(
            path, params=params, headers={**self.user.headers, "X-Min-Position": position}
        )
        assert r.status_code == 200, r.text
        return r.json()


async def test_a_conversation_through_both_apis(stack: Stack, pool: AsyncConnectionPool) -> None:
    ann_user, bob_user, cy_user = await users(stack, EventStore(pool), 3)
    ann, bob = Client(stack, ann_user), Client(stack, bob_user)
    room = await create_channel(stack.write, ann_user, "private", topic="plans")
    await ann.write("POST", f"/v1/channels/{room}/invites", {"user_id": bob_user.id})
    [invite] = (await bob.read("/v1/me/notifications", after=ann))["items"]
    assert (invite["kind"], invite["channel_id"], invite["read"]) == ("invited", room, False)

    await bob.write("POST", f"/v1/channels/{room}/join")
    assert (await bob.read("/v1/me/notifications"))["items"][0]["read"] is True
    [mine] = (await bob.read("/v1/channels"))["items"]
    assert (mine["channel_id"], mine["member_count"], mine["topic"]) == (room, 2, "plans")

    hello = await ann.write("POST", f"/v1/channels/{room}/messages",
                            {"text": f"hi @{bob_user.username}"})  # fmt: skip
    [mention] = (await bob.read("/v1/me/notifications", after=ann, unread_only="true"))["items"]
    assert (mention["kind"], mention["seq"], mention["actor_id"]) == ("mentioned", 1, ann_user.id)
    assert await bob.read("/v1/me/unread") == [
        {"channel_id": room, "unread_count": 1, "last_read_seq": 0}
    ]
    answer = await bob.write("POST", f"/v1/channels/{room}/messages",
                             {"text": "yes", "reply_to": hello["message_id"]})  # fmt: skip
    assert await bob.read("/v1/me/unread") == []  # answering reads
    assert [n["kind"] for n in (await ann.read("/v1/me/notifications", after=bob))["items"]] == [
        "reply"
    ]

    await ann.write("POST", f"/v1/channels/{room}/messages/{answer['message_id']}/reactions",
                    {"emoji": "👍"})  # fmt: skip
    await ann.write("PATCH", f"/v1/channels/{room}/messages/{hello['message_id']}",
                    {"text": "hello @nobody"})  # fmt: skip
    await bob.write("DELETE", f"/v1/channels/{room}/messages/{answer['message_id']}")
    first, second = (await ann.read(f"/v1/channels/{room}/messages", after=bob))["items"]
    assert first["text"] == "hello @nobody" and first["edited_at"] is not None
    assert second["deleted"] is True and "text" not in second and second["reactions"] == []
    assert second["reply_to"] == hello["message_id"]

    r = await stack.read.get(f"/v1/channels/{room}/messages", headers=cy_user.headers)
    assert r.status_code == 404  # cy is not in the private channel

    dm = (await ann.write("POST", "/v1/dms", {"user_id": bob_user.id}))["channel_id"]
    sent = await ann.write("POST", f"/v1/channels/{dm}/messages", {"text": "psst"})
    assert [m["status"] for m in (await ann.read(f"/v1/channels/{dm}/messages"))["items"]] == [
        "sent"
    ]
    await bob.write("POST", f"/v1/channels/{dm}/delivered", {"message_id": sent["message_id"]})
    [seen] = (await ann.read(f"/v1/channels/{dm}/messages", after=bob))["items"]
    assert seen["status"] == "delivered"
    await bob.write("POST", f"/v1/channels/{dm}/read", {"message_id": sent["message_id"]})
    [seen] = (await ann.read(f"/v1/channels/{dm}/messages", after=bob))["items"]
    assert seen["status"] == "read"
    channel = await bob.read(f"/v1/channels/{dm}")
    assert channel["kind"] == "direct" and sorted(channel["member_ids"]) == sorted(
        [ann_user.id, bob_user.id]
    )

    await ann.write("DELETE", f"/v1/channels/{room}")
    r = await stack.read.get(
        f"/v1/channels/{room}", headers={**bob_user.headers, "X-Min-Position": ann.position}
    )
    assert r.status_code == 404
    assert [c["channel_id"] for c in (await bob.read("/v1/channels", after=ann))["items"]] == [dm]
