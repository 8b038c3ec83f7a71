"""Password hashing with argon2id, off the event loop and bounded.

Each hash takes tens of milliseconds and 64 MiB; a burst of requests must not run them all
at once, so at most `concurrency` run at a time and the rest queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from prometheus_client import Gauge, Histogram

T = TypeVar("T")

ARGON2_QUEUE = Gauge("hubbub_argon2_waiting", "Password hashes waiting for a slot")
ARGON2_ACTIVE = Gauge("hubbub_argon2_active", "Password hashes running")
ARGON2_WAIT_SECONDS = Histogram(
    "hubbub_argon2_wait_seconds",
    "Time a hash or verification waited for a slot",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ARGON2_SECONDS = Histogram(
    "hubbub_argon2_seconds",
    "Time a hash or verification took once it had a slot",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


class Passwords:
    """argon2id hashing and verification on a small thread pool."""

    def __init__(self, *, concurrency: int = 2, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher(type=Type.ID)
        self._slots = asyncio.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="argon2")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        ARGON2_QUEUE.inc()
        queued = time.perf_counter()
        try:
            await self._slots.acquire()
        finally:
            ARGON2_QUEUE.dec()
        started = time.perf_counter()
        ARGON2_WAIT_SECONDS.observe(started - queued)
        ARGON2_ACTIVE.inc()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            ARGON2_ACTIVE.dec()
            ARGON2_SECONDS.observe(time.perf_counter() - started)
            self._slots.release()

    async def hash(self, password: str) -> str:
        """A new argon2id hash of `password`."""
        return await self._run(self.hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        """True when `password` matches; False for a wrong password or an unusable hash."""

        def check() -> bool:
            try:
                return self.hasher.verify(password_hash, password)
            except (VerificationError, InvalidHashError):
                return False

        return await self._run(check)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than ours."""
        try:
            return self.hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
