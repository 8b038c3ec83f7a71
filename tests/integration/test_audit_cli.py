"""`hubbub audit replay|verify` (make replay / make verify) as real processes."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from events.envelope import ENVELOPE_DECODER
from infra.db import make_pool
from infra.store import EventStore
from tests.fix_events import register_users
from tests.fix_stack import Stack, hubbub, relay_caught_up

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_replay_exports_every_event_and_verify_names_a_tampered_one(stack: Stack) -> None:
    assert stack.settings.database_url
    pool = make_pool(stack.settings.database_url, min_size=1, max_size=2)
    await pool.open()
    try:
        store = EventStore(pool)
        await register_users(store, 12)
        await relay_caught_up(pool)  # verify checks against the relay's anchors

        replay = await hubbub(stack, "audit", "replay")
        assert replay.exit_code == 0, replay.stderr
        envelopes = [ENVELOPE_DECODER.decode(line) for line in replay.stdout.splitlines()]
        stored = await store.read_all(limit=10_000)
        assert [e.event_id for e in envelopes] == [str(e.event_id) for e in stored]
        assert all(msgspec.json.decode(e.data) for e in envelopes)
        later = await hubbub(stack, "audit", "replay", "--after", envelopes[5].position)
        assert len(later.stdout.splitlines()) == len(envelopes) - 6
        bad = await hubbub(stack, "audit", "replay", "--after", "not-a-token")
        assert bad.exit_code == 2

        ok = await hubbub(stack, "audit", "verify")
        assert ok.exit_code == 0 and "ok" in ok.stdout, ok.stderr
        victim = stored[3]
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "UPDATE events SET data = %s::json WHERE event_id = %s",
                (f'{{"x": "{uuid.uuid4()}"}}', victim.event_id),
            )
        failed = await hubbub(stack, "audit", "verify")
        assert failed.exit_code == 1
        assert f"{victim.stream_id} version {victim.stream_version}" in failed.stderr
    finally:
        await pool.close()
