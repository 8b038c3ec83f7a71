"""The channel sequencer against a real store: commands to one stream queue behind the one
being appended, and every command is decided once, in order, whatever happens to the
others' requests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from commands import channel as ch
from events.channel import (
    ChannelCreated,
    ChannelEvent,
    MemberJoined,
    MessageSent,
    channel_stream,
)
from events.registry import decode
from infra.store import NO_STREAM, EventStore, StreamAppend
from tests.fix_events import new_event, verify_chain
from write_api.handling import Outcome
from write_api.sequencer import Sequencer

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _seq(events: Sequence[ChannelEvent], _: object) -> dict[str, Any]:
    (event,) = events
    assert isinstance(event, MessageSent)
    return {"seq": event.seq}


async def _channel(store: EventStore, owner: str) -> str:
    channel_id, now = str(uuid.uuid4()), datetime.now(UTC)
    created = ChannelCreated(channel_id=channel_id, kind="group", name=f"c-{channel_id}",
                             visibility="public", owner_id=owner, created_at=now)  # fmt: skip
    joined = MemberJoined(channel_id=channel_id, user_id=owner, role="owner", joined_at=now)
    await store.append([StreamAppend(channel_stream(channel_id), NO_STREAM,
                                     [new_event(created), new_event(joined)])])  # fmt: skip
    return channel_stream(channel_id)


def _send(owner: str) -> ch.Send:
    return ch.Send(actor_id=owner, message_id=str(uuid.uuid4()), text="hi", at=datetime.now(UTC))


async def test_one_stream_many_callers_each_decided_once_in_turn(
    shared_pool: AsyncConnectionPool,
) -> None:
    store = EventStore(shared_pool)
    sequencer = Sequencer(store, ch.decide, ch.evolve, ch.INITIAL)
    owner = str(uuid.uuid4())
    stream = await _channel(store, owner)

    async def send() -> Outcome:
        return await sequencer.submit(stream, _send(owner), meta=b"{}", idem=None, respond=_seq)

    first = await send()  # a quiet stream
    assert first.response == {"seq": 1}
    # One is appended, the others queue behind it; one caller gives up meanwhile.
    tasks = [asyncio.create_task(send()) for _ in range(40)]
    await asyncio.sleep(0)
    tasks[0].cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    answered = [o for o in outcomes if isinstance(o, Outcome)]
    assert len(answered) >= 39
    assert all(isinstance(o, Outcome | asyncio.CancelledError) for o in outcomes)
    seqs = sorted(o.response["seq"] for o in answered)
    assert len(set(seqs)) == len(seqs)
    recorded = [decode(r.type, r.schema_version, r.data) for r in await store.read_stream(stream)]
    stored = [e.seq for e in recorded if isinstance(e, MessageSent)]
    assert stored == list(range(1, len(stored) + 1))  # in turn, none twice
    assert set(seqs) <= set(stored) and len(stored) - 1 - len(seqs) <= 1  # the one who left
    again = await send()  # and the stream serves the next caller
    assert again.response == {"seq": len(stored) + 1}
    await sequencer.close()


async def test_a_quiet_stream_s_command_is_decided_and_appended_in_its_caller_s_task(
    shared_pool: AsyncConnectionPool,
) -> None:
    # No lane task and no future to wait on: each costs a turn of a busy event loop.
    deciders: list[asyncio.Task[Any] | None] = []

    def decide(command: ch.ChannelCommand, state: ch.ChannelState) -> list[ChannelEvent]:
        deciders.append(asyncio.current_task())
        return ch.decide(command, state)

    store = EventStore(shared_pool)
    sequencer = Sequencer(store, decide, ch.evolve, ch.INITIAL)
    owner = str(uuid.uuid4())
    stream = await _channel(store, owner)

    async def send() -> tuple[Outcome, asyncio.Task[Any] | None]:
        outcome = await sequencer.submit(stream, _send(owner), meta=b"{}", idem=None,
                                         respond=_seq)  # fmt: skip
        return outcome, asyncio.current_task()

    for expected_seq in (1, 2):
        outcome, caller = await asyncio.create_task(send())
        assert outcome.response == {"seq": expected_seq}
        assert deciders[-1] is caller
    # Commands that arrive while one is being appended still queue behind it, each
    # answered once and in turn, and the lane is quiet again afterwards.
    sends = [asyncio.create_task(send()) for _ in range(10)]
    outcomes = [o for o, _ in await asyncio.gather(*sends)]
    assert sorted(o.response["seq"] for o in outcomes) == list(range(3, 13))
    outcome, caller = await asyncio.create_task(send())
    assert outcome.response == {"seq": 13} and deciders[-1] is caller
    await sequencer.close()


async def test_a_stream_whose_command_is_being_appended_keeps_its_lane(
    shared_pool: AsyncConnectionPool,
) -> None:
    # Only idle streams' states are forgotten: one whose command is being appended in its
    # caller's coroutine is not idle (a fresh lane would decide on a stale state).
    store = EventStore(shared_pool)
    sequencer = Sequencer(store, ch.decide, ch.evolve, ch.INITIAL, max_streams=1)
    owner = str(uuid.uuid4())
    first, second = await _channel(store, owner), await _channel(store, owner)

    def send(stream: str) -> asyncio.Task[Outcome]:
        return asyncio.create_task(
            sequencer.submit(stream, _send(owner), meta=b"{}", idem=None, respond=_seq)
        )

    appending = send(first)
    await asyncio.sleep(0)  # it is appending now, in its own task
    assert not appending.done()
    other = send(second)
    await asyncio.sleep(0)  # the second stream's lane is made, the oldest idle one forgotten
    assert first in sequencer._lanes
    assert (await appending).response == {"seq": 1}
    assert (await other).response == {"seq": 1}
    await sequencer.close()


async def test_two_processes_on_one_stream_keep_one_unbroken_sequence(
    shared_pool: AsyncConnectionPool,
) -> None:
    """Two write APIs (a sequencer and a store each) send to one channel at once. Each store
    chains to the head its own last append ended, which the other keeps making stale: the
    unique index refuses those inserts, and the loser reads what is new and decides again.
    Every send gets its own seq, the log holds 1..N with no gap, and the chain holds."""
    stores = [EventStore(shared_pool, notify=False) for _ in range(2)]
    sequencers = [Sequencer(store, ch.decide, ch.evolve, ch.INITIAL) for store in stores]
    owner = str(uuid.uuid4())
    stream = await _channel(stores[0], owner)

    async def sends(sequencer: Sequencer[Any, Any, Any], n: int) -> list[int]:
        seqs = []
        for _ in range(n):
            outcome = await sequencer.submit(
                stream, _send(owner), meta=b"{}", idem=None, respond=_seq
            )
            seqs.append(outcome.response["seq"])
        return seqs

    mine, theirs = await asyncio.gather(sends(sequencers[0], 25), sends(sequencers[1], 25))
    assert mine == sorted(mine) and theirs == sorted(theirs)
    assert sorted(mine + theirs) == list(range(1, 51))
    recorded = await stores[1].read_stream(stream)
    verify_chain(recorded)
    sent = [decode(r.type, r.schema_version, r.data) for r in recorded]
    assert [e.seq for e in sent if isinstance(e, MessageSent)] == list(range(1, 51))
    for sequencer in sequencers:
        await sequencer.close()
