"""Audit figures: the whole log exported over HTTP, and verified.

`audit_export` tops the log up to 1,000,000 events (QUICK: 50,000), settles it (VACUUM, as
autovacuum would), starts the read API as its own process (`python -m infra.cli
read-api`, as `hubbub run` does) and streams `GET /v1/audit/events` from it, as NDJSON
and then as CloudEvents, with a client that counts lines as they arrive and keeps none.
A thread samples the read API's RSS every 10 ms: constant memory means its peak stays
within a few batches of its size before the export, whatever the log's length.

`audit_verify` times infra.audit.verify_all (every stream's chain and the global chain)
over the same log, in this process.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Final

import httptools
import psutil

from bench.context import QUICK, BenchContext
from bench.http1 import request_bytes
from bench.processes import CpuWatch, free_port, running, wait_all_live
from bench.read_all import fill, settle
from bench.result import Result, rate
from bench.timing import Measured, stopwatch
from infra.audit import verify_all
from infra.store import EventStore
from infra.tokens import Tokens

FULL_EVENTS: Final = 1_000_000
QUICK_EVENTS: Final = 50_000
TARGET_PER_S: Final = 100_000
SAMPLE_S: Final = 0.010
# Above the RSS before the export: a few 5,000-event batches as rows, envelopes and the
# encoded chunk (some 900 bytes each) plus the allocator's slack. A log held in memory
# would be some 2 GiB.
FLAT_SLACK_MIB: Final = 64
HOST: Final = "127.0.0.1"


def _events(ctx: BenchContext) -> int:
    return QUICK_EVENTS if ctx.sizes is QUICK else FULL_EVENTS


def _mib(n_bytes: float) -> float:
    return round(n_bytes / 2**20, 1)


class RssTrace:
    """A process's RSS, sampled every SAMPLE_S on a thread of its own while in the block."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self.samples: list[int] = []
        self._thread = threading.Thread(target=self._sample, name="rss-trace", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.samples.append(self._process.memory_info().rss)

    def __enter__(self) -> RssTrace:
        self.samples.append(self._process.memory_info().rss)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def deciles_mib(self) -> list[float]:
        """RSS at 10 %, 20 %, ... 100 % of the span: flat, or growing with the export."""
        n = len(self.samples)
        return [_mib(self.samples[min(n - 1, n * k // 10)]) for k in range(1, 11)]


@dataclass
class _Count(asyncio.Protocol):
    """One streamed response, parsed by httptools (C); its body is counted, never kept."""

    done: asyncio.Future[None]
    status: int = 0
    lines: int = 0
    size: int = 0
    first_byte: float | None = None
    _parser: httptools.HttpResponseParser = field(init=False)

    def __post_init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)

    def data_received(self, data: bytes) -> None:
        if self.first_byte is None:
            self.first_byte = time.perf_counter()
        self._parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed before the end: {exc}"))

    def on_body(self, body: bytes) -> None:
        self.lines += body.count(b"\n")
        self.size += len(body)

    def on_message_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if not self.done.done():
            self.done.set_result(None)


async def _stream(port: int, target: str, token: str) -> tuple[_Count, float]:
    """GET `target`, read to the end; the count and the seconds to the first byte."""
    loop = asyncio.get_running_loop()
    count = _Count(loop.create_future())
    transport, _ = await loop.create_connection(lambda: count, HOST, port)
    try:
        started = time.perf_counter()
        headers = {"Authorization": f"Bearer {token}", "Connection": "close"}
        transport.write(request_bytes("GET", target, f"{HOST}:{port}", headers))
        await count.done
    finally:
        transport.close()
    if count.status != 200:
        raise RuntimeError(f"GET {target} answered {count.status}")
    return count, (count.first_byte or started) - started


@dataclass
class _Pass:
    events: int
    size: int
    first_byte_s: float
    measured: Measured
    read_api_cpu_s: float
    rss: RssTrace


async def _export(port: int, token: str, pid: int, target: str) -> _Pass:
    cpu = CpuWatch({"read-api": pid})
    with RssTrace(pid) as rss, stopwatch() as m:
        cpu.mark()
        count, first_byte = await _stream(port, target, token)
        read_api_cpu = cpu.since()["read-api"]
    if m.server_cpu is not None:
        # The read API serves the export: its CPU is the server's, not "other load" (it
        # read as 0.88 cores of other processes, and the report warned of a noisy run).
        m.server_cpu += read_api_cpu
    return _Pass(count.lines, count.size, first_byte, m, read_api_cpu, rss)


async def audit_export(ctx: BenchContext) -> Result:
    """Events/s of GET /v1/audit/events over the whole log from the read API process,
    with its RSS before, at every tenth of the export, and at its peak."""
    wanted = _events(ctx)
    async with ctx.pool(2, "bench-audit") as pool:
        store = EventStore(pool, notify=False)
        await fill(replace(ctx, sizes=replace(ctx.sizes, read_all_min=wanted)), store)
        await settle(store)
    settings = replace(ctx.nats.settings(ctx.url), read_api_port=free_port(),
                       jwt_secret=secrets.token_hex(32))  # fmt: skip
    token, _ = Tokens(settings.jwt_secret or "").issue(
        "bench-auditor", "bench", frozenset({"auditor"})
    )
    port = settings.read_api_port
    with running(settings, "read-api") as (proc,):
        await wait_all_live({"the read API": (f"http://{HOST}:{port}", proc)})
        await _stream(port, "/v1/audit/events?limit=20000", token)  # warm-up
        before = psutil.Process(proc.pid).memory_info().rss
        ndjson = await _export(port, token, proc.pid, "/v1/audit/events")
        cloud = await _export(port, token, proc.pid, "/v1/audit/events?format=cloudevents")
    peak = max(max(ndjson.rss.samples), max(cloud.rss.samples))
    bound = _mib(before) + FLAT_SLACK_MIB
    n, m = ndjson.events, ndjson.measured
    return rate(
        "audit_export", n, m, "events/s",
        cloudevents_per_s=round(cloud.events / cloud.measured.seconds),
        mib_per_s=round(ndjson.size / 2**20 / m.seconds, 1),
        mean_line_bytes=round(ndjson.size / max(n, 1)),
        first_byte_ms=round(ndjson.first_byte_s * 1000, 1),
        read_api_cpu_us_per_event=round(ndjson.read_api_cpu_s / max(n, 1) * 1e6, 2),
        rss_before_mib=_mib(before), peak_rss_mib=_mib(peak),
        rss_deciles_mib=ndjson.rss.deciles_mib(),
        flat_memory=f"peak <= before + {FLAT_SLACK_MIB} MiB = {bound} MiB: "
                    + ("pass" if _mib(peak) <= bound else "FAIL"),
    )  # fmt: skip


async def audit_verify(ctx: BenchContext) -> Result:
    """Events/s of infra.audit.verify_all over the whole log (every stream's hash chain and
    the global chain; this run's relay anchored nothing, so no anchor is compared)."""
    async with ctx.pool(2, "bench-audit") as pool:
        store = EventStore(pool, notify=False)
        await fill(replace(ctx, sizes=replace(ctx.sizes, read_all_min=_events(ctx))), store)
        await settle(store)
        with stopwatch() as m:
            verdict = await verify_all(pool)
    if not verdict.ok:
        raise RuntimeError(f"the bench log does not verify: {verdict.reason}")
    return rate("audit_verify", verdict.events, m, "events/s", streams=verdict.streams)
