"""`hubbub demo`'s world, made through the real write API and visible in the read API."""

from __future__ import annotations

import pytest

from infra.demo import PASSWORD, DemoFailed, seed
from tests.fix_stack import Stack, hubbub

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_demo_world_is_made_and_readable(stack: Stack) -> None:
    world = await seed(str(stack.write.base_url))
    assert len(world.users) == 3 and len(world.channels) == 3
    bob = next(name for name in world.users if name.startswith("bob_"))
    signed = await stack.write.post("/v1/auth/login", json={"username": bob, "password": PASSWORD})
    headers = {"Authorization": f"Bearer {signed.json()['access_token']}",
               "X-Min-Position": world.position}  # fmt: skip
    general = next(cid for name, cid in world.channels.items() if name.startswith("general-"))
    page = await stack.read.get(f"/v1/channels/{general}/messages", headers=headers)
    assert page.status_code == 200, page.text
    items = page.json()["items"]
    assert [m["text"] for m in items] == ["Welcome to Hubbub!", f"Thanks @ann_{bob[4:]}!"]
    assert items[0]["reactions"] == [{"emoji": "🎉", "count": 1, "me": False}]
    auction = await stack.read.get(f"/v1/auctions/{world.auction_id}", headers=headers)
    assert auction.status_code == 200, auction.text
    assert (auction.json()["bid_count"], auction.json()["current_price"]) == (2, 1200)
    private = next(cid for name, cid in world.channels.items() if name.startswith("plans-"))
    assert (await stack.read.get(f"/v1/channels/{private}", headers=headers)).status_code == 404


async def test_hubbub_demo_prints_what_it_made(stack: Stack) -> None:
    ran = await hubbub(stack, "demo", "--url", str(stack.write.base_url))
    assert ran.exit_code == 0, ran.stderr
    assert "general-" in ran.stdout and PASSWORD in ran.stdout and "X-Min-Position" in ran.stdout
    refused = await hubbub(stack, "demo", "--url", "http://127.0.0.1:9")
    assert refused.exit_code != 0 and "not answering" in refused.stderr + refused.stdout


async def test_the_demo_says_when_no_write_api_answers() -> None:
    with pytest.raises(DemoFailed, match="not answering"):
        await seed("http://127.0.0.1:9")
