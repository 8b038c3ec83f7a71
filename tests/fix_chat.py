"""Chat test helpers: many signed-in users without paying argon2 for each, and channels.

Users are registered by appending their events (the registration path has its own
tests) and signed in with an access token issued by the stack's own secret, exactly as
login would issue it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from events.user import UsernameClaimed, user_stream
from infra.store import NO_STREAM, EventStore, StreamAppend
from infra.tokens import Tokens
from infra.vault import Vault
from tests.fix_events import new_event, user_registered
from tests.fix_stack import Stack


@dataclass(frozen=True)
class User:
    id: str
    username: str
    headers: dict[str, str]

    def key(self, key: str) -> dict[str, str]:
        """The user's headers with an Idempotency-Key."""
        return {**self.headers, "Idempotency-Key": key}


async def users(
    stack: Stack, store: EventStore, n: int, roles: frozenset[str] = frozenset()
) -> list[User]:
    """`n` registered users, each with a bearer token."""
    tokens = Tokens(stack.settings.resolved_jwt_secret())
    vault = await Vault.load(store.pool)
    out = []
    for _ in range(n):
        uid = str(uuid.uuid4())
        event = user_registered(uid)
        await store.append([
            StreamAppend(vault.username_stream(event.username), NO_STREAM,
                         [new_event(UsernameClaimed(username=event.username, user_id=uid))]),
            StreamAppend(user_stream(uid), NO_STREAM, [new_event(event)]),
        ])  # fmt: skip
        token, _ = tokens.issue(uid, str(uuid.uuid4()), roles)
        out.append(User(uid, event.username, {"Authorization": f"Bearer {token}"}))
    return out


async def create_channel(
    client: httpx.AsyncClient, owner: User, visibility: str = "public", **extra: Any
) -> str:
    """A new channel with a unique name; its id."""
    body = {"name": f"c-{uuid.uuid4().hex[:12]}", "visibility": visibility, **extra}
    r = await client.post("/v1/channels", json=body, headers=owner.headers)
    assert r.status_code == 201, r.text
    channel_id: str = r.json()["channel_id"]
    return channel_id


async def join(client: httpx.AsyncClient, channel_id: str, *members: User) -> None:
    for member in members:
        r = await client.post(f"/v1/channels/{channel_id}/join", headers=member.headers)
        assert r.status_code == 200, r.text


async def say(
    client: httpx.AsyncClient, channel_id: str, author: User, text: str = "hi"
) -> dict[str, Any]:
    """Send a message; the response body."""
    r = await client.post(f"/v1/channels/{channel_id}/messages", json={"text": text},
                          headers=author.headers)  # fmt: skip
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body
