"""Login throttling: too many failures for one username, or from one client address,
within a window -> 429 with Retry-After until the window ends. Counters live in
PostgreSQL so that every write API process shares them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool


@dataclass(frozen=True)
class Limit:
    failures: int
    window_s: float


@dataclass(frozen=True)
class ThrottlePolicy:
    per_username: Limit = Limit(failures=5, window_s=900)
    per_address: Limit = Limit(failures=50, window_s=900)


class LoginThrottle:
    """Counts failed logins; says how long a username or address must wait."""

    def __init__(self, pool: AsyncConnectionPool, policy: ThrottlePolicy | None = None) -> None:
        self.pool = pool
        self.policy = policy or ThrottlePolicy()

    def _keys(self, username: str, address: str) -> list[tuple[str, Limit]]:
        return [
            (f"user:{username}", self.policy.per_username),
            (f"addr:{address}", self.policy.per_address),
        ]

    async def retry_after(self, username: str, address: str) -> int:
        """Seconds until a login may be tried again (0: now)."""
        wait = 0.0
        async with self.pool.connection() as conn:
            for key, limit in self._keys(username, address):
                cur = await conn.execute(
                    "SELECT failures, extract(epoch FROM window_started + make_interval(secs => %s) - now())"
                    " FROM login_throttle WHERE key = %s",
                    (limit.window_s, key),
                )
                row = await cur.fetchone()
                if row is not None and row[0] >= limit.failures and row[1] > 0:
                    wait = max(wait, float(row[1]))
        return math.ceil(wait)

    async def failed(self, username: str, address: str) -> None:
        """Count a failure against the username and the address (a new window when the old one ended)."""
        async with self.pool.connection() as conn:
            for key, limit in self._keys(username, address):
                await conn.execute(
                    "INSERT INTO login_throttle AS t (key, window_started, failures) VALUES (%s, now(), 1)"
                    " ON CONFLICT (key) DO UPDATE SET"
                    "   failures = CASE WHEN t.window_started + make_interval(secs => %s) <= now()"
                    "                   THEN 1 ELSE t.failures + 1 END,"
                    "   window_started = CASE WHEN t.window_started + make_interval(secs => %s) <= now()"
                    "                   THEN now() ELSE t.window_started END",
                    (key, limit.window_s, limit.window_s),
                )

    async def succeeded(self, username: str) -> None:
        """A good password clears the username's count (not the address's)."""
        async with self.pool.connection() as conn:
            await conn.execute("DELETE FROM login_throttle WHERE key = %s", (f"user:{username}",))
