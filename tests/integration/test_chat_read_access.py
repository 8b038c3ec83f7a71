"""Who may read which channel: a private or direct channel is, to anyone outside it,
indistinguishable from one that does not exist; signed-out callers get 401."""

from __future__ import annotations

import pytest
from psycopg_pool import AsyncConnectionPool

from infra.store import EventStore
from tests.fix_stack import Stack
from tests.integration.chat_log import ChatLog, User, random_id, signed_in
from tests.integration.test_register_slice import assert_problem

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBPATHS = ("", "/members", "/messages")


async def status(stack: Stack, log: ChatLog, user: User | None, path: str) -> int:
    headers = {"X-Min-Position": log.position, **(user.auth if user else {})}
    r = await stack.read.get(path, headers=headers)
    if r.status_code == 404:
        body = assert_problem(r, 404, "channel_not_found")
        assert body["detail"] == "no such channel"  # the same words whatever the reason
    return r.status_code


async def test_private_and_missing_channels_look_the_same(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    log = ChatLog(EventStore(pool))
    ann, bob, eve = [await signed_in(stack.write) for _ in range(3)]
    secret = await log.channel(ann.user_id, visibility="private", name="secret")
    await log.join(secret, bob.user_id)
    await log.send(secret, ann.user_id, "for members only")
    await log.invite(secret, eve.user_id, ann.user_id)  # invited is not yet in
    public = await log.channel(ann.user_id)
    await log.send(public, ann.user_id, "for everyone")

    for sub in SUBPATHS:
        assert await status(stack, log, ann, f"/v1/channels/{secret}{sub}") == 200
        assert await status(stack, log, bob, f"/v1/channels/{secret}{sub}") == 200
        assert await status(stack, log, eve, f"/v1/channels/{secret}{sub}") == 404
        assert await status(stack, log, eve, f"/v1/channels/{public}{sub}") == 200
        # guessing: an unknown id, something that is no id, the nil id
        for guess in (random_id(), "not-a-uuid", "00000000-0000-0000-0000-000000000000", "1"):
            assert await status(stack, log, ann, f"/v1/channels/{guess}{sub}") == 404
    assert (await stack.read.get("/v1/channels/x%00y", headers=ann.auth)).status_code == 404

    # leaving shuts the door again
    await log.leave(secret, bob.user_id)
    for sub in SUBPATHS:
        assert await status(stack, log, bob, f"/v1/channels/{secret}{sub}") == 404
    await log.join(secret, eve.user_id)
    assert await status(stack, log, eve, f"/v1/channels/{secret}/messages") == 200


async def test_signed_out_callers_are_401(stack: Stack, pool: AsyncConnectionPool) -> None:
    log = ChatLog(EventStore(pool))
    ann = await signed_in(stack.write)
    room = await log.channel(ann.user_id)
    paths = ["/v1/channels", "/v1/me/unread", "/v1/me/notifications",
             *(f"/v1/channels/{room}{sub}" for sub in SUBPATHS)]  # fmt: skip
    for path in paths:
        assert_problem(await stack.read.get(path), 401, "unauthorized")
        r = await stack.read.get(path, headers={"Authorization": "Bearer not.a.token"})
        assert r.status_code == 401, (path, r.text)
        assert await status(stack, log, ann, path) == 200
