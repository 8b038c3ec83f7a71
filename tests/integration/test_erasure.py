"""Erasure by crypto-shredding: `hubbub users forget` makes a user's personal data unreadable
in the log and gone from every read model, while every hash still verifies."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import msgspec
import pytest
from psycopg import sql

from infra.db import make_pool
from infra.store import EventStore
from infra.vault import Vault
from projections import messages, users
from projections.ops import rebuild_projection
from tests.fix_chat import User, create_channel, join, say
from tests.fix_stack import Stack, hubbub
from tests.integration.test_sessions import PASSWORD, login

pytestmark = pytest.mark.usefixtures("isolated_logging")

SECRET = "the vault code is 4321"
DISPLAY = "Ann Q. Example"


async def _signed_up(client: httpx.AsyncClient, display_name: str) -> tuple[User, str]:
    """A user registered and signed in through the API; the user and their username."""
    name = f"u{uuid.uuid4().hex[:12]}"
    r = await client.post("/v1/auth/register",
                          json={"username": name, "password": PASSWORD, "display_name": display_name})  # fmt: skip
    assert r.status_code == 201, r.text
    user_id = r.json()["user_id"]
    token = (await login(client, name)).json()["access_token"]
    return User(user_id, name, {"Authorization": f"Bearer {token}"}), name


async def _read_model_text(pool: Any) -> str:
    """Every row of every read model, as one text (what erasure must leave no trace in)."""
    out = []
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema LIKE 'rm\\_%' AND table_type = 'BASE TABLE'"
        )
        for schema, table in await cur.fetchall():
            rows = await conn.execute(
                sql.SQL("SELECT t::text FROM {}.{} t").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
            )
            out += [row[0] for row in await rows.fetchall()]
    return "\n".join(out)


async def _throttled(pool: Any, username: str) -> bool:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT 1 FROM login_throttle WHERE key = %s", (f"user:{username}",)
        )
        return await cur.fetchone() is not None


async def test_forget_erases_a_user_everywhere_while_the_log_verifies(stack: Stack) -> None:
    assert stack.settings.database_url
    pool = make_pool(stack.settings.database_url, min_size=1, max_size=2)
    await pool.open()
    try:
        store = EventStore(pool, notify=False)
        ann, ann_name = await _signed_up(stack.write, DISPLAY)
        bob, _ = await _signed_up(stack.write, "Bob")
        channel = await create_channel(stack.write, bob)
        await join(stack.write, channel, ann)
        sent = await say(stack.write, channel, ann, SECRET)
        r = await stack.write.patch(f"/v1/channels/{channel}/messages/{sent['message_id']}",
                                    json={"text": SECRET + ", edited"}, headers=ann.headers)  # fmt: skip
        assert r.status_code == 200, r.text
        kept = await say(stack.write, channel, bob, "bob keeps his words")

        # The log never held ann's personal data in clear: sealed with her key.
        log = b"\n".join(
            [bytes(e.data) + e.stream_id.encode() async for b in store.iter_all() for e in b]
        )
        for personal in (SECRET.encode(), DISPLAY.encode(), ann_name.encode(), b"$argon2id"):
            assert personal not in log
        fresh = {"X-Min-Position": kept["position"], "X-Wait-Ms": "5000"}
        page = await stack.read.get(f"/v1/channels/{channel}/messages",
                                    headers={**bob.headers, **fresh})  # fmt: skip
        assert [m.get("text") for m in page.json()["items"]] == [
            SECRET + ", edited",
            "bob keeps his words",
        ]  # opened for the read models while her key lives
        assert SECRET in await _read_model_text(pool)

        wrong = await login(stack.write, ann_name, "not her password")
        assert wrong.status_code == 401  # a failed-login count, keyed by her name
        assert await _throttled(pool, ann_name)
        forgot = await hubbub(stack, "users", "forget", ann_name)
        assert forgot.exit_code == 0, forgot.stderr
        assert f"user {ann.id} forgotten: key destroyed" in forgot.stdout
        token = forgot.stdout.split("UserForgotten at ")[1].split()[0]
        fresh = {"X-Min-Position": token, "X-Wait-Ms": "5000"}

        # Gone from every read model; her rows stay, marked erased.
        profile = await stack.read.get(f"/v1/users/{ann.id}", headers=fresh)
        assert profile.status_code == 200, profile.text
        body = profile.json()
        assert (body["erased"], body["username"], body["display_name"]) == (True, None, None)
        page = await stack.read.get(f"/v1/channels/{channel}/messages",
                                    headers={**bob.headers, **fresh})  # fmt: skip
        erased, bobs = page.json()["items"]
        assert erased["erased"] is True and "text" not in erased
        assert erased["author_id"] == ann.id and erased["seq"] == sent["seq"]
        assert bobs["erased"] is False and bobs["text"] == "bob keeps his words"
        everything = await _read_model_text(pool)
        for personal in (SECRET, DISPLAY, ann_name):
            assert personal not in everything
        assert not await _throttled(pool, ann_name)

        # The log is untouched: every hash, per stream and global, still verifies.
        verified = await hubbub(stack, "audit", "verify")
        assert verified.exit_code == 0, verified.stdout + verified.stderr
        for stream in (f"user-{ann.id}", f"channel-{channel}"):
            assert (await hubbub(stack, "audit", "verify", "--stream", stream)).exit_code == 0

        # Nothing opens her values any more, here or in a fresh process.
        sealed = next(e for e in await store.read_stream(f"user-{ann.id}")
                      if e.type == "UserRegistered")  # fmt: skip
        vault = await Vault.load(pool)
        stored_name = msgspec.json.decode(sealed.data)["username"]
        assert await vault.reveal(stored_name) == "[erased]"

        # She can neither sign in nor use the token she had; her name stays reserved.
        assert (await login(stack.write, ann_name)).status_code == 401
        refused = await say_status(stack.write, channel, ann)
        assert refused == 401
        again = await stack.write.post("/v1/auth/register",
                                       json={"username": ann_name, "password": PASSWORD})  # fmt: skip
        assert again.status_code == 409 and again.json()["code"] == "username_taken"
        invite = await stack.write.post("/v1/dms", json={"user_id": ann.id},
                                        headers=bob.headers)  # fmt: skip
        assert invite.status_code == 404 and invite.json()["code"] == "user_not_found"

        # Rebuilding from the log cannot bring anything back.
        for projection in (users, messages):
            await rebuild_projection(pool, projection)
        everything = await _read_model_text(pool)
        for personal in (SECRET, DISPLAY, ann_name):
            assert personal not in everything

        # Forgetting twice is harmless and says so.
        twice = await hubbub(stack, "users", "forget", ann.id)
        assert twice.exit_code == 0 and "already forgotten" in twice.stdout
    finally:
        await pool.close()


async def say_status(client: httpx.AsyncClient, channel_id: str, author: User) -> int:
    """The status of a message send that is expected to be refused (retried while the
    revocation reaches the API, within a second)."""
    for _ in range(40):
        r = await client.post(f"/v1/channels/{channel_id}/messages", json={"text": "still here?"},
                              headers=author.headers)  # fmt: skip
        if r.status_code != 201:
            return r.status_code
        await asyncio.sleep(0.05)
    return 201


@pytest.mark.parametrize("who", ["nobody-at-all", "01920000-0000-7000-8000-000000000000"])
async def test_forgetting_an_unknown_user_is_a_clear_error(stack: Stack, who: str) -> None:
    ran = await hubbub(stack, "users", "forget", who)
    assert ran.exit_code == 2
    assert ran.stderr.strip() == f"hubbub: no user {who!r}"
