"""The event store against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from infra.store import (
    ANY,
    COPY_FROM,
    NO_STREAM,
    AppendNotifier,
    ConcurrencyError,
    DuplicateKey,
    EventStore,
    Idempotency,
    NewEvent,
    StoreUnavailable,
    StreamAppend,
)
from tests.fix_events import verify_chain

pytestmark = pytest.mark.asyncio(loop_scope="session")


def new_event(n: int = 0, type: str = "Thing") -> NewEvent:
    return NewEvent(
        event_id=uuid.uuid4(),
        type=type,
        data=f'{{"n": {n}}}'.encode(),
        metadata=b'{"correlation_id": "c"}',
    )


async def test_append_and_read_back_in_order(shared_pool: AsyncConnectionPool) -> None:
    store = EventStore(shared_pool)
    stream = f"test-{uuid.uuid4()}"
    first = await store.append([StreamAppend(stream, NO_STREAM, [new_event(1), new_event(2)])])
    second = await store.append([StreamAppend(stream, 2, [new_event(3)])])
    assert first.versions == [1, 2] and second.versions == [3]
    assert first.position < second.position
    events = await store.read_stream(stream)
    assert [e.data for e in events] == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    verify_chain(events)  # both the single-event and the multi-event paths hash alike
    backwards = await store.read_stream(stream, backwards=True, limit=2)
    assert [e.stream_version for e in backwards] == [3, 2]
    assert [e.stream_version for e in await store.read_stream(stream, from_version=2)] == [2, 3]


@pytest.mark.parametrize("expected", [NO_STREAM, 1, 5])
async def test_wrong_expected_version_appends_nothing(
    shared_pool: AsyncConnectionPool, expected: int
) -> None:
    store = EventStore(shared_pool)
    stream = f"test-{uuid.uuid4()}"
    await store.append([StreamAppend(stream, NO_STREAM, [new_event(), new_event()])])
    for batch in ([new_event()], [new_event(), new_event()]):
        with pytest.raises(ConcurrencyError) as info:
            await store.append([StreamAppend(stream, expected, batch)])
        assert info.value.stream_id == stream and info.value.actual == 2
    assert len(await store.read_stream(stream)) == 2


async def test_expected_below_any_is_refused_before_anything_is_sent() -> None:
    """The append paths read `expected` alike only for ANY, NO_STREAM and versions: the
    multi-event path once took -2 as "any" where the others took it as a conflict."""
    with pytest.raises(ValueError, match="below ANY"):
        StreamAppend("test-x", -2, [new_event()])


@pytest.mark.parametrize("shape", ["one", "each", "many", "copy"])
async def test_any_appends_after_whatever_is_there_on_every_path(
    shared_pool: AsyncConnectionPool, shape: str
) -> None:
    store = EventStore(shared_pool)
    stream, other = f"test-{uuid.uuid4()}", f"test-{uuid.uuid4()}"
    await store.append([StreamAppend(stream, NO_STREAM, [new_event(), new_event()])])
    n = {"one": 1, "each": 1, "many": 3, "copy": COPY_FROM}[shape]
    appends = [StreamAppend(stream, ANY, [new_event(i) for i in range(n)])]
    if shape == "each":
        appends.append(StreamAppend(other, ANY, [new_event()]))
    result = await store.append(appends)
    assert result.versions[:n] == list(range(3, 3 + n))
    events = await store.read_stream(stream)
    assert len(events) == 2 + n
    verify_chain(events)


async def test_multi_stream_append_is_atomic(shared_pool: AsyncConnectionPool) -> None:
    store = EventStore(shared_pool)
    a, b = f"test-{uuid.uuid4()}", f"test-{uuid.uuid4()}"
    await store.append([StreamAppend(b, NO_STREAM, [new_event()])])
    with pytest.raises(ConcurrencyError) as info:
        await store.append(
            [StreamAppend(a, NO_STREAM, [new_event()]), StreamAppend(b, NO_STREAM, [new_event()])]
        )
    assert info.value.stream_id == b
    assert await store.read_stream(a) == []
    result = await store.append(
        [StreamAppend(a, NO_STREAM, [new_event()]), StreamAppend(b, 1, [new_event()])]
    )
    assert result.versions == [1, 2]


async def test_one_event_in_each_of_several_streams_chains_and_keys_like_the_others(
    shared_pool: AsyncConnectionPool,
) -> None:
    """The combiner's shape (one statement for several streams, one event each): hashes
    chained as the other paths chain them, versions and keys where they belong, and a
    stream elsewhere refuses the whole append under its own name."""
    store = EventStore(shared_pool)
    a, b, c = (f"test-{uuid.uuid4()}" for _ in range(3))
    await store.append([StreamAppend(b, NO_STREAM, [new_event(), new_event()])])
    scope = str(uuid.uuid4())
    keys = [Idempotency(scope=scope, key=k, request_hash=b"h", response=b"{}", upto=i)
            for i, k in enumerate("xy")]  # fmt: skip
    result = await store.append(
        [StreamAppend(a, NO_STREAM, [new_event(1)]), StreamAppend(b, 2, [new_event(2)])],
        idempotency=keys,
    )
    assert result.versions == [1, 3] and result.positions == sorted(result.positions)
    for stream in (a, b):
        verify_chain(await store.read_stream(stream))
    found = await store.find_idempotent_many([(scope, "x"), (scope, "y")])
    assert found[(scope, "x")].positions == [result.positions[0]]
    assert found[(scope, "y")].positions == [result.positions[1]]
    with pytest.raises(ConcurrencyError) as info:
        await store.append(
            [StreamAppend(c, NO_STREAM, [new_event()]), StreamAppend(b, 2, [new_event()])]
        )
    assert (info.value.stream_id, info.value.expected, info.value.actual) == (b, 2, 3)
    assert await store.read_stream(c) == []


@pytest.mark.parametrize("batch", [1, 3, COPY_FROM])
async def test_many_writers_on_one_stream_exactly_one_wins_each_version(
    shared_pool: AsyncConnectionPool, batch: int
) -> None:
    store = EventStore(shared_pool)
    stream = f"test-{uuid.uuid4()}"
    wins: list[int] = []
    conflicts = 0

    async def writer() -> None:
        nonlocal conflicts
        for _ in range(15):
            version = len(await store.read_stream(stream)) if wins else 0
            try:
                result = await store.append(
                    [StreamAppend(stream, version, [new_event() for _ in range(batch)])]
                )
            except ConcurrencyError:
                conflicts += 1
                continue
            assert result.versions[0] == version + 1
            wins.append(result.versions[-1])

    await asyncio.gather(*(writer() for _ in range(12)))
    events = await store.read_stream(stream)
    assert len(events) == len(wins) * batch
    assert sorted(wins) == list(range(batch, len(events) + 1, batch))  # each version won once
    assert conflicts > 0, "the test must actually race"
    verify_chain(events)


async def test_any_version_appends_never_lose_an_event(shared_pool: AsyncConnectionPool) -> None:
    store = EventStore(shared_pool)
    stream = f"test-{uuid.uuid4()}"
    done = 0

    async def writer() -> None:
        nonlocal done
        for _ in range(10):
            while True:
                try:
                    await store.append([StreamAppend(stream, ANY, [new_event()])])
                    done += 1
                    break
                except ConcurrencyError:
                    continue  # two ANY writers met at the same version: the loser retries

    await asyncio.gather(*(writer() for _ in range(8)))
    assert len(await store.read_stream(stream)) == done == 80


@pytest.mark.parametrize("batch", [1, 2, COPY_FROM])
async def test_idempotency_key_appends_once_and_returns_the_first_result(
    shared_pool: AsyncConnectionPool, batch: int
) -> None:
    store = EventStore(shared_pool)
    stream = f"test-{uuid.uuid4()}"
    key = Idempotency(scope="u1", key=str(uuid.uuid4()), request_hash=b"h1", response=b'{"ok": 1}')
    results = await asyncio.gather(
        *(store.append([StreamAppend(stream, ANY, [new_event() for _ in range(batch)])], idempotency=key)
          for _ in range(6)),
        return_exceptions=True,
    )  # fmt: skip
    firsts = [r for r in results if not isinstance(r, BaseException) and not r.duplicate]
    assert len(firsts) == 1
    replays = [r for r in results if not isinstance(r, BaseException) and r.duplicate]
    assert all(
        r.stored_response == b'{"ok": 1}' and r.position == firsts[0].position for r in replays
    )
    # racing writers may instead see the version conflict; none of them appended
    assert all(isinstance(r, ConcurrencyError) for r in results if isinstance(r, BaseException))
    assert len(await store.read_stream(stream)) == batch
    stored = await store.find_idempotent("u1", key.key)
    assert (
        stored is not None and stored.stored_hash == b"h1" and stored.position == firsts[0].position
    )


async def test_one_append_records_several_keys_each_at_its_own_last_event(
    shared_pool: AsyncConnectionPool,
) -> None:
    store = EventStore(shared_pool)
    stream = f"test-{uuid.uuid4()}"
    scope = str(uuid.uuid4())
    keys = [
        Idempotency(scope=scope, key="a", request_hash=b"ha", response=b'{"n": 1}', upto=1),
        Idempotency(scope=scope, key="b", request_hash=b"hb", response=b'{"n": 2}', upto=2),
    ]
    result = await store.append(
        [StreamAppend(stream, NO_STREAM, [new_event(i) for i in range(3)])], idempotency=keys
    )
    found = await store.find_idempotent_many([(scope, "a"), (scope, "b"), (scope, "zzz")])
    assert set(found) == {(scope, "a"), (scope, "b")}
    assert found[(scope, "a")].positions == [result.positions[1]]
    assert found[(scope, "b")].positions == [result.positions[2]]
    assert found[(scope, "b")].stored_response == b'{"n": 2}'
    # a key used meanwhile: the whole append is refused, nothing appended
    again = [keys[0], Idempotency(scope=scope, key="c", request_hash=b"hc", response=b"{}")]
    with pytest.raises(DuplicateKey):
        await store.append([StreamAppend(stream, 3, [new_event(), new_event()])], idempotency=again)
    assert len(await store.read_stream(stream)) == 3
    assert await store.find_idempotent(scope, "c") is None


async def test_a_large_append_is_copied_in_and_chains_numbers_and_keys_like_a_small_one(
    shared_pool: AsyncConnectionPool,
) -> None:
    """From COPY_FROM events an append COPYs them in: the same versions, hashes, positions
    and keys as the INSERT path, only this append's positions inside a caller's
    transaction, and a bad event or a stream elsewhere leaves nothing behind."""
    store = EventStore(shared_pool)
    a, b = f"test-{uuid.uuid4()}", f"big-{uuid.uuid4()}"
    await store.append([StreamAppend(b, NO_STREAM, [new_event(0)])])
    half = COPY_FROM // 2 + 1
    scope = str(uuid.uuid4())
    keys = [Idempotency(scope=scope, key="first", request_hash=b"h", response=b"{}", upto=half - 1),
            Idempotency(scope=scope, key="last", request_hash=b"h", response=b"{}")]  # fmt: skip
    async with shared_pool.connection() as conn, conn.transaction():
        before = await store.append([StreamAppend(a, NO_STREAM, [new_event(-1)])], conn=conn)
        result = await store.append(
            [StreamAppend(a, 1, [new_event(i) for i in range(half)]),
             StreamAppend(b, 1, [new_event(i) for i in range(half)])],
            idempotency=keys, conn=conn,
        )  # fmt: skip
    assert len(result.positions) == 2 * half and before.positions[0] < result.positions[0]
    assert result.positions == sorted(result.positions) and result.txid == before.txid
    assert result.versions == [*range(2, half + 2), *range(2, half + 2)]
    for stream, positions in ((a, result.positions[:half]), (b, result.positions[half:])):
        events = await store.read_stream(stream)
        assert [e.stream_version for e in events] == list(range(1, half + 2))
        assert [e.position for e in events[1:]] == positions  # the positions it reported
        assert [e.data for e in events[1:]] == [f'{{"n": {i}}}'.encode() for i in range(half)]
        verify_chain(events)
    async with shared_pool.connection() as conn:
        cur = await conn.execute(
            "SELECT DISTINCT stream_id, category FROM events WHERE stream_id IN (%s, %s)", (a, b)
        )
        assert sorted(await cur.fetchall()) == [(b, "big"), (a, "test")]
    found = await store.find_idempotent_many([(scope, "first"), (scope, "last")])
    assert found[(scope, "first")].positions == [result.positions[half - 1]]
    assert found[(scope, "last")].positions == [result.positions[-1]]

    async with shared_pool.connection() as conn, conn.pipeline():  # no COPY in a pipeline
        piped = await store.append(
            [StreamAppend(b, half + 1, [new_event() for _ in range(COPY_FROM)])], conn=conn
        )
    assert piped.versions == list(range(half + 2, half + 2 + COPY_FROM))
    verify_chain(await store.read_stream(b))

    bad = [new_event(i) for i in range(COPY_FROM)]
    bad[-1] = NewEvent(event_id=uuid.uuid4(), type="Thing", data=b"{not json", metadata=b"{}")
    with pytest.raises(StoreUnavailable):
        await store.append([StreamAppend(a, half + 1, bad)])
    with pytest.raises(ConcurrencyError) as info:
        await store.append([StreamAppend(a, 1, [new_event() for _ in range(COPY_FROM)])])
    assert (info.value.expected, info.value.actual) == (1, half + 1)
    assert len(await store.read_stream(a)) == half + 1


async def test_a_head_the_store_appended_is_not_looked_up_but_no_version_is_skipped(
    shared_pool: AsyncConnectionPool,
) -> None:
    """A store chains a single event to a head its own append ended without reading it
    back; a writer that got there first still wins, and a head appended in a caller's
    transaction that rolled back is never taken as the stream's."""
    mine, other = EventStore(shared_pool, notify=False), EventStore(shared_pool, notify=False)
    stream, scope = f"test-{uuid.uuid4()}", str(uuid.uuid4())
    await mine.append([StreamAppend(stream, NO_STREAM, [new_event(1)])])
    await other.append([StreamAppend(stream, 1, [new_event(2)])])
    with pytest.raises(ConcurrencyError) as info:  # mine knows version 1 only
        await mine.append([StreamAppend(stream, 1, [new_event(3)])])
    assert (info.value.expected, info.value.actual) == (1, 2)
    await mine.append([StreamAppend(stream, 2, [new_event(3)])])  # looked up: now known
    async with shared_pool.connection() as conn, conn.transaction():
        await mine.append([StreamAppend(stream, 3, [new_event(4)])], conn=conn)
        raise psycopg.Rollback()
    with pytest.raises(ConcurrencyError) as info:  # version 4 never was
        await mine.append([StreamAppend(stream, 4, [new_event(5)])])
    assert (info.value.expected, info.value.actual) == (4, 3)
    key = Idempotency(scope=scope, key="k", request_hash=b"h", response=b"{}")
    result = await mine.append([StreamAppend(stream, 3, [new_event(5)])], idempotency=key)
    again = await mine.append([StreamAppend(stream, 4, [new_event(6)])], idempotency=key)
    assert again.duplicate and result.versions == [4]
    with pytest.raises(ConcurrencyError) as info:  # an existing stream is not new
        await mine.append([StreamAppend(stream, NO_STREAM, [new_event(7)])])
    assert (info.value.expected, info.value.actual) == (0, 4)
    events = await mine.read_stream(stream)
    assert [e.stream_version for e in events] == [1, 2, 3, 4]
    assert [e.data for e in events] == [f'{{"n": {n}}}'.encode() for n in (1, 2, 3, 5)]
    assert events[-1].position == result.positions[0]
    verify_chain(events)
    stored = await mine.find_idempotent(scope, "k")
    assert stored is not None and stored.positions == result.positions


async def test_events_cannot_be_updated_deleted_or_truncated(
    shared_pool: AsyncConnectionPool,
) -> None:
    store = EventStore(shared_pool)
    stream = f"test-{uuid.uuid4()}"
    await store.append([StreamAppend(stream, NO_STREAM, [new_event()])])
    async with shared_pool.connection() as conn:
        for statement in (
            "UPDATE events SET data = '{}' WHERE stream_id = %s",
            "DELETE FROM events WHERE stream_id = %s",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(statement, (stream,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("TRUNCATE events")
    assert len(await store.read_stream(stream)) == 1


async def test_appends_wake_a_listener_and_a_burst_ends_with_a_hint(
    shared_pool: AsyncConnectionPool, database_url: str
) -> None:
    store = EventStore(shared_pool)
    store.notifier = AppendNotifier(shared_pool, interval=0.3)  # long enough to tell apart
    stream = f"test-{uuid.uuid4()}"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute("LISTEN hubbub_events")

        async def hints(seconds: float) -> int:
            return len([n async for n in listener.notifies(timeout=seconds, stop_after=1)])

        # the first append carries the hint: delivered at its commit, long before the
        # background task could send one (0.3 s on)
        await store.append([StreamAppend(stream, NO_STREAM, [new_event(1)])])
        assert await hints(0.2) == 1
        # the next, within the interval, leaves one owed: the task sends it after the burst
        await store.append([StreamAppend(stream, 1, [new_event(2)])])
        assert await hints(5) == 1
        await store.notifier.close()
