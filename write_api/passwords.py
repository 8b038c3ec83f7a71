"""Password hashing with argon2id, off the event loop and bounded.

Each hash takes tens of milliseconds and 64 MiB; a burst of requests must not run them all
at once, so at most `concurrency` run at a time and the rest queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from prometheus_client import Gauge

T = TypeVar("T")

ARGON2_QUEUE = Gauge("hubbub_argon2_waiting", "Password hashes waiting for a slot")
ARGON2_ACTIVE = Gauge("hubbub_argon2_active", "Password hashes running")


class Passwords:
    """argon2id hashing and verification on a small thread pool."""

    def __init__(self, *, concurrency: int = 2, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher(type=Type.ID)
        self._slots = asyncio.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="argon2")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        ARGON2_QUEUE.inc()
        async with self._slots:
            ARGON2_QUEUE.dec()
            ARGON2_ACTIVE.inc()
            try:
                return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
            finally:
                ARGON2_ACTIVE.dec()

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
