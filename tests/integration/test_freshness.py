"""Read-your-writes waiting (read_api.freshness) against a real PostgreSQL: each waiter is
woken once its projections have all reached its position, and no sooner; a waiter that
times out answers False, and one that goes away takes nothing with it."""

from __future__ import annotations

import asyncio

import pytest
from psycopg_pool import AsyncConnectionPool

from events.envelope import Position
from read_api.freshness import Freshness

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def started(fresh_database_url: str, pool: AsyncConnectionPool) -> Freshness:
    # Projections that have no schema in this database: refresh() finds none and keeps
    # the origin, so only the test moves the positions.
    freshness = Freshness(fresh_database_url, pool, ["a", "b"])
    await freshness.refresh()
    return freshness


def moved(freshness: Freshness, name: str, position: Position) -> None:
    """What a projector's notification does."""
    freshness._advance(name, position)
    freshness._wake()


async def test_waiters_wake_when_all_their_projections_got_there_in_any_order(
    fresh_database_url: str, pool: AsyncConnectionPool
) -> None:
    f = await started(fresh_database_url, pool)
    wanted = {
        "a@5": (["a"], Position(1, 5)),
        "a@9": (["a"], Position(1, 9)),
        "ab@3": (["a", "b"], Position(1, 3)),
        "ba@3": (["b", "a"], Position(1, 3)),  # the same set, named in another order
        "b@2:1": (["b"], Position(2, 1)),  # a later transaction: after every (1, n)
    }
    tasks = {k: asyncio.create_task(f.wait(names, at, 30.0)) for k, (names, at) in wanted.items()}
    await asyncio.sleep(0)

    async def done() -> set[str]:
        await asyncio.sleep(0)
        return {k for k, t in tasks.items() if t.done()}

    moved(f, "a", Position(1, 5))
    assert await done() == {"a@5"}
    moved(f, "b", Position(1, 4))
    assert await done() == {"a@5", "ab@3", "ba@3"}
    moved(f, "b", Position(1, 9))  # (1, 9) is still before (2, 1)
    assert await done() == {"a@5", "ab@3", "ba@3"}
    moved(f, "a", Position(3, 0))
    moved(f, "b", Position(2, 1))
    assert await done() == set(wanted)
    assert all(t.result() is True for t in tasks.values())
    # A position already reached needs no waiting at all.
    assert await f.wait(["a", "b"], Position(1, 1), 0.0) is True


async def test_waiters_that_time_out_or_leave_take_nothing_with_them(
    fresh_database_url: str, pool: AsyncConnectionPool
) -> None:
    f = await started(fresh_database_url, pool)
    far = Position(10**9, 0)
    # Timeouts: each answers False (the position is not reached).
    results = await asyncio.gather(*(f.wait(["a"], far, 0.01) for _ in range(50)))
    assert results == [False] * 50
    # Requests that go away while waiting (a client hung up).
    leaving = [asyncio.create_task(f.wait(["a", "b"], far, 30.0)) for _ in range(50)]
    staying = asyncio.create_task(f.wait(["a"], Position(1, 1), 30.0))
    await asyncio.sleep(0)
    for task in leaving:
        task.cancel()
    await asyncio.gather(*leaving, return_exceptions=True)
    # Those still waiting are still woken, and the ones that left are not.
    moved(f, "a", Position(1, 1))
    assert await staying is True
    assert all(t.cancelled() for t in leaving)
