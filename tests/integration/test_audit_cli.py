"""`hubbub audit replay|verify|state` (make replay / make verify) as real processes."""

from __future__ import annotations

import uuid

import msgspec
import pytest
from psycopg_pool import AsyncConnectionPool

from events.envelope import ENVELOPE_DECODER
from infra.db import make_pool
from infra.store import EventStore
from tests.fix_events import register_users
from tests.fix_stack import Stack, hubbub, relay_caught_up
from tests.fix_tamper import force
from tests.integration.test_audit_api import known_history

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


async def test_replay_state_and_verify_answer_as_the_read_api_does(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    h = await known_history(stack, pool)
    auth = h.auditor.headers
    for params, args in (
        ({}, []),
        ({"format": "cloudevents", "type": "MessageSent,BidPlaced"},
         ["--format", "cloudevents", "--type", "MessageSent", "--type", "BidPlaced"]),
        ({"stream_id": h.channel, "after": h.positions["message 1"], "limit": "2"},
         ["--stream", h.channel, "--after", h.positions["message 1"], "--limit", "2"]),
        ({"since": "2000-01-01T00:00:00Z", "until": "2999-01-01T00:00:00+02:00"},
         ["--since", "2000-01-01T00:00:00Z", "--until", "2999-01-01T00:00:00+02:00"]),
    ):  # fmt: skip
        over_http = await stack.read.get("/v1/audit/events", params=params, headers=auth)
        assert over_http.status_code == 200, over_http.text
        replay = await hubbub(stack, "audit", "replay", *args)
        assert replay.exit_code == 0, replay.stderr
        assert replay.stdout.encode() == over_http.content and over_http.content, args
    bad = await hubbub(stack, "audit", "replay", "--since", "noon", "--format", "xml")
    assert bad.exit_code == 2 and "since" in bad.stderr and "format" in bad.stderr

    for params in ({}, {"at_position": h.positions["bid 1000"]}):
        over_http = await stack.read.get(
            f"/v1/audit/streams/{h.auction}/state", params=params, headers=auth
        )
        options = [f"--{k.replace('_', '-')}={v}" for k, v in params.items()]
        state = await hubbub(stack, "audit", "state", h.auction, *options)
        assert state.exit_code == 0, state.stderr
        assert msgspec.json.decode(state.stdout) == over_http.json()
    missing = await hubbub(stack, "audit", "state", f"auction-{uuid.uuid4()}")
    assert missing.exit_code == 1 and "no events" in missing.stderr

    ok = await hubbub(stack, "audit", "verify", "--stream", h.channel)
    assert ok.exit_code == 0 and "ok" in ok.stdout, ok.stderr
    await force(pool, "UPDATE events SET metadata = '{}' WHERE stream_id = %s"
                " AND stream_version = 2", h.channel)  # fmt: skip
    failed = await hubbub(stack, "audit", "verify", "--stream", h.channel)
    assert failed.exit_code == 1 and "version 2" in failed.stderr, failed.stderr
