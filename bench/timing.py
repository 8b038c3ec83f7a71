"""Concurrent writers on one event loop, timed with perf_counter, and where the CPU went."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import psutil

T = TypeVar("T")


@dataclass
class Measured:
    """Wall-clock seconds and, over the same span, CPU seconds of this process, of the
    PostgreSQL server (when it runs here), and of the whole machine (all cores). On a
    2-core machine that runs both, the split tells who the bottleneck is, and what is
    left over tells how much other work disturbed the measurement."""

    seconds: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float | None = None
    machine_cpu: float = 0.0


class ServerWatch:
    """The CPU time of a local PostgreSQL server: its postmaster and every process under
    it (backends, WAL writer, checkpointer). Backends that exit mid-span are missed, so
    pools are opened before a measurement starts."""

    def __init__(self) -> None:
        self.pid: int | None = None

    def cpu(self) -> float | None:
        """Seconds of CPU used so far, or None when there is no local server to watch."""
        if self.pid is None:
            return None
        try:
            root = psutil.Process(self.pid)
            total = 0.0
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
        except psutil.Error:
            return None
        return total


# Set once by bench.__main__ when the server runs on this machine.
SERVER = ServerWatch()


def _busy() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


@contextmanager
def stopwatch(freeze: bool = True) -> Iterator[Measured]:
    """Measure the block. The garbage collector stops seeing what exists now: the payloads
    built in advance would otherwise be rescanned by every full collection, a cost of the
    harness and not of the code under test. Garbage made inside is still collected.
    `freeze=False` leaves the collector alone: for a window opened while load is already
    running (on another thread), which a collection here would pause."""
    if freeze:
        gc.collect()
        gc.freeze()
    m = Measured()
    server, busy, cpu = SERVER.cpu(), _busy(), time.process_time()
    started = time.perf_counter()
    try:
        yield m
    finally:
        m.seconds = time.perf_counter() - started
        m.client_cpu = time.process_time() - cpu
        m.machine_cpu = _busy() - busy
        server_now = SERVER.cpu()
        if server is not None and server_now is not None:
            m.server_cpu = server_now - server
        if freeze:
            gc.unfreeze()


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of an ascending sequence."""
    index = max(0, min(len(sorted_values) - 1, int(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


async def writers(count: int, per_writer: int, op: Callable[[int], Awaitable[object]]) -> None:
    """Run `count` tasks, each awaiting op(writer) `per_writer` times."""

    async def one(writer: int) -> None:
        for _ in range(per_writer):
            await op(writer)

    await asyncio.gather(*(one(w) for w in range(count)))


async def warm_then_time(
    count: int, warmup: int, per_writer: int, op: Callable[[int], Awaitable[object]]
) -> Measured:
    """A short untimed warm-up (connections, prepared statements, caches), then the timed run."""
    await writers(count, warmup, op)
    with stopwatch() as m:
        await writers(count, per_writer, op)
    return m


async def open_loop(
    one: Callable[[int, float], Awaitable[T]], start: float, count: int, rate: float, what: str,
    *, clock: Callable[[], float] = time.perf_counter,
) -> list[T]:  # fmt: skip
    """Call `one(k, scheduled)` for k in 0..count-1 at start + k / rate (on `clock`),
    without waiting for earlier calls: open loop. Every result, once all are done; the
    first failure stops new calls and is raised (naming `what` failed) at the end."""
    done: list[T] = []
    errors: list[BaseException] = []
    tasks: set[asyncio.Task[None]] = set()

    async def call(k: int, scheduled: float) -> None:
        try:
            done.append(await one(k, scheduled))
        except Exception as e:  # raised after the run, not swallowed
            errors.append(e)

    for k in range(count):
        scheduled = start + k / rate
        delay = scheduled - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        if errors:
            break
        task = asyncio.create_task(call(k, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*tasks)
    if errors:
        raise RuntimeError(f"{len(errors)} {what} failed: {errors[0]}") from errors[0]
    return done
