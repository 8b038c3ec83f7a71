"""`hubbub demo`: a small world to look at, made through the public write API like any
client would (so it needs `hubbub run`, or the write API, running)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

PASSWORD = "demo-password"


class DemoFailed(RuntimeError):
    """The write API refused a demo step (or could not be reached)."""


@dataclass
class World:
    """What the demo made: who can sign in, and the ids of what they made."""

    users: dict[str, str] = field(default_factory=dict)  # username -> user id
    channels: dict[str, str] = field(default_factory=dict)  # name -> channel id
    auction_id: str = ""
    position: str = ""  # the last command's: read with X-Min-Position to see it all


async def _call(client: httpx.AsyncClient, method: str, path: str, token: str | None = None,
                **body: Any) -> dict[str, Any]:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        r = await client.request(method, path, json=body or None, headers=headers)
    except httpx.HTTPError as e:
        raise DemoFailed(f"the write API at {client.base_url} is not answering ({e!r});"
                         " start it with `hubbub run`") from e  # fmt: skip
    if r.status_code >= 300:
        raise DemoFailed(f"{method} {path}: {r.status_code} {r.text}")
    answer: dict[str, Any] = r.json() if r.content else {}
    return answer


async def seed(base_url: str) -> World:
    """Three users, a public and a private channel with messages, a direct channel, and an
    auction with two bids. Names get a random suffix so the demo can run again."""
    world = World()
    tag = secrets.token_hex(3)
    tokens: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for name in ("ann", "bob", "cy"):
            username = f"{name}_{tag}"
            made = await _call(client, "POST", "/v1/auth/register", username=username,
                               password=PASSWORD, display_name=name.capitalize())  # fmt: skip
            world.users[username] = made["user_id"]
            signed = await _call(
                client, "POST", "/v1/auth/login", username=username, password=PASSWORD
            )
            tokens[name] = signed["access_token"]
        bob, cy = world.users[f"bob_{tag}"], world.users[f"cy_{tag}"]
        general = (await _call(client, "POST", "/v1/channels", tokens["ann"], name=f"general-{tag}",
                               visibility="public", topic="Say hello"))["channel_id"]  # fmt: skip
        secret = (await _call(client, "POST", "/v1/channels", tokens["ann"], name=f"plans-{tag}",
                              visibility="private"))["channel_id"]  # fmt: skip
        world.channels = {f"general-{tag}": general, f"plans-{tag}": secret}
        await _call(client, "POST", f"/v1/channels/{general}/join", tokens["bob"])
        await _call(client, "POST", f"/v1/channels/{general}/join", tokens["cy"])
        await _call(client, "POST", f"/v1/channels/{secret}/invites", tokens["ann"], user_id=bob)
        first = await _call(client, "POST", f"/v1/channels/{general}/messages", tokens["ann"],
                            text="Welcome to Hubbub!")  # fmt: skip
        await _call(client, "POST", f"/v1/channels/{general}/messages", tokens["bob"],
                    text=f"Thanks @ann_{tag}!", reply_to=first["message_id"])  # fmt: skip
        await _call(client, "POST", f"/v1/channels/{general}/messages/{first['message_id']}/reactions",
                    tokens["cy"], emoji="🎉")  # fmt: skip
        direct = (await _call(client, "POST", "/v1/dms", tokens["bob"], user_id=cy))["channel_id"]
        await _call(client, "POST", f"/v1/channels/{direct}/messages", tokens["bob"], text="Psst")
        world.channels["bob+cy"] = direct
        ends = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
        world.auction_id = (await _call(
            client, "POST", "/v1/auctions", tokens["cy"], title="A very fine lamp", currency="EUR",
            starting_price=1000, min_increment=100, reserve_price=1500, ends_at=ends,
            anti_snipe_s=30, category="home",
        ))["auction_id"]  # fmt: skip
        await _call(
            client, "POST", f"/v1/auctions/{world.auction_id}/bids", tokens["ann"], amount=1000
        )
        last = await _call(
            client, "POST", f"/v1/auctions/{world.auction_id}/bids", tokens["bob"], amount=1200
        )
        world.position = last["position"]
    return world
