"""What every workload gets: the run's database, pools on it, sizes, and NATS on demand."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from bench.servers import LazyNats, database_of, fresh_database
from infra.db import make_pool


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """How much each workload does. Counts are totals over all writers, per round."""

    writers: int = 16
    warmup: int = 25  # operations per writer before the clock starts
    raw_insert: int
    append_single: int
    batched_events: int
    read_all_min: int
    eventsourcing: int
    rebuild_users: int


# About two minutes on the 2-core reference machine, with the raw/append rounds long
# enough (10-15 s each) that a burst of other work moves a figure by per cents, not by half.
FULL = Sizes(
    raw_insert=80_000,
    append_single=64_000,
    batched_events=200_000,
    read_all_min=400_000,
    eventsourcing=16_000,
    rebuild_users=50_000,
)
QUICK = Sizes(
    warmup=5,
    raw_insert=2_000,
    append_single=2_000,
    batched_events=20_000,
    read_all_min=40_000,
    eventsourcing=1_000,
    rebuild_users=5_000,
)


@dataclass(frozen=True, kw_only=True)
class BenchContext:
    """The run's fresh, migrated database (`url`) on the server `admin_url` names."""

    url: str
    admin_url: str
    run_id: str
    sizes: Sizes
    nats: LazyNats

    @contextlib.asynccontextmanager
    async def pool(self, size: int = 16, name: str = "bench") -> AsyncIterator[AsyncConnectionPool]:
        """infra.db.make_pool with min = max = `size`, opened with every connection ready."""
        pool = make_pool(self.url, min_size=size, max_size=size, name=name)
        await pool.open(wait=True, timeout=60)
        try:
            yield pool
        finally:
            await pool.close()

    @contextlib.contextmanager
    def scratch_database(self, suffix: str) -> Iterator[str]:
        """Another fresh database on the same server, dropped on exit."""
        with fresh_database(self.admin_url, f"{database_of(self.url)}_{suffix}") as url:
            yield url
