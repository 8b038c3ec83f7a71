"""Identity figures: what verifying an access token costs, and what a login costs in time
and in the write API's memory.

`token_verify` times infra.tokens.Tokens.verify in this process. `login` starts the write
API as its own process (`python -m infra.cli write-api`) on a scratch database, registers
users over HTTP, then times sequential logins (set beside one argon2id hash timed here:
the hash should be most of a login) and samples the process's RSS every 10 ms while bursts
of concurrent logins arrive (argon2 runs at most `Passwords(concurrency=2)` at a time, each
with 64 MiB, so the peak should stay near the baseline plus 2 x 64 MiB however many wait).
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import httpx
import psutil
import psycopg

from bench.context import QUICK, BenchContext
from bench.processes import free_port, running, wait_live
from bench.result import Result
from bench.timing import quantile
from infra.auth import Authenticator
from infra.db import migrate
from infra.tokens import Tokens
from projections import sessions
from projections.runtime import ensure_schema
from write_api.passwords import Passwords

TARGET_VERIFY_US = 50.0
VERIFY_WARMUP = 2_000
VERIFY_BATCHES = 5

USERS = 50  # registered, and logging in at once in each burst
PASSWORD = "bench-password-0123"
ARGON2_SLOTS = 2  # Passwords' default concurrency
ARGON2_MIB = 64  # memory per hash (argon2-cffi's default profile)
RSS_SLACK_MIB = 32  # allocator and request buffers on top of the hashes
SAMPLE_S = 0.010


def _mib(n_bytes: float) -> float:
    return round(n_bytes / 2**20, 1)


# --- token_verify ---------------------------------------------------------------------


def _verify_timing(calls: int) -> tuple[list[float], float, float]:
    """Per-batch microseconds per verification, the total seconds timed, and the CPU
    seconds this process spent meanwhile (less than the wall time: it was kept waiting)."""
    tokens = Tokens(secrets.token_hex(32))  # 64 characters
    token, _ = tokens.issue("bench-user", "bench-session", frozenset({"operator"}))
    for _ in range(VERIFY_WARMUP):
        tokens.verify(token)
    per_batch = max(1, calls // VERIFY_BATCHES)
    batches: list[float] = []
    total = 0.0
    cpu_start = time.process_time()
    for _ in range(VERIFY_BATCHES):
        start = time.perf_counter()
        for _ in range(per_batch):
            tokens.verify(token)
        elapsed = time.perf_counter() - start
        total += elapsed
        batches.append(elapsed / per_batch * 1e6)
    return batches, total, time.process_time() - cpu_start


def _per_request_us(calls: int) -> float:
    """Microseconds per request for a token the Authenticator has seen before (a client
    sends one access token with every request for its life): expiry and revocation are
    still checked each time, the signature once."""
    tokens = Tokens(secrets.token_hex(32))
    token, _ = tokens.issue("bench-user", "bench-session", frozenset({"operator"}))
    auth = Authenticator(tokens, frozenset())
    request = SimpleNamespace(headers={"authorization": f"Bearer {token}"})
    auth.principal(request)  # type: ignore[arg-type]  # it reads .headers only
    start = time.perf_counter()
    for _ in range(calls):
        auth.principal(request)  # type: ignore[arg-type]
    return (time.perf_counter() - start) / calls * 1e6


async def token_verify(ctx: BenchContext) -> Result:
    """Microseconds per Tokens.verify of a fresh HS256 token (the first request with a
    token): median of 5 batches; and per later request with the same token."""
    calls = 5_000 if ctx.sizes is QUICK else 50_000
    batches, seconds, cpu = _verify_timing(calls)
    warm = _per_request_us(calls)
    us = statistics.median(batches)
    verdict = "pass" if us < TARGET_VERIFY_US else "FAIL"
    return Result(
        name="token_verify", value=us, unit="us/verify",
        n=len(batches) * max(1, calls // VERIFY_BATCHES), seconds=seconds,
        extra={
            "batches_us": [round(b, 2) for b in batches],
            "statistic": f"median of {len(batches)} batches",
            "cpu_per_wall": round(cpu / seconds, 2),
            "per_later_request_us": round(warm, 2),
            "target": f"< {TARGET_VERIFY_US:g} us: {verdict}",
        },
    )  # fmt: skip


# --- login ----------------------------------------------------------------------------


async def _login(client: httpx.AsyncClient, username: str) -> float:
    """Seconds for one successful login."""
    start = time.perf_counter()
    response = await client.post(
        "/v1/auth/login", json={"username": username, "password": PASSWORD}
    )
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"login of {username} answered {response.status_code}: {response.text}")
    return elapsed


class _RssSampler:
    """The peak RSS of a process, sampled every SAMPLE_S on a thread of its own."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self.peak = 0
        self.samples = 0
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self.samples += 1
            self._stop.wait(SAMPLE_S)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _hash_p50_ms(runs: int) -> float:
    hasher = Passwords().hasher
    hasher.hash(PASSWORD)  # warm-up
    times: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        hasher.hash(PASSWORD)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


async def _measure_login(ctx: BenchContext, url: str) -> Result:
    quick = ctx.sizes is QUICK
    sequential, bursts, hash_runs = (10, 1, 5) if quick else (30, 3, 10)
    port = free_port()
    settings = replace(ctx.nats.settings(url), write_api_port=port,
                       jwt_secret=secrets.token_hex(32))  # fmt: skip
    limits = httpx.Limits(max_connections=USERS, max_keepalive_connections=USERS)
    with running(settings, "write-api") as (proc,):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits,
                                     timeout=120.0) as client:  # fmt: skip
            await wait_live(client, proc)
            names = [f"bench{i:03d}" for i in range(USERS)]

            async def register(name: str) -> None:
                response = await client.post(
                    "/v1/auth/register", json={"username": name, "password": PASSWORD}
                )
                if response.status_code != 201:
                    raise RuntimeError(f"register {name}: {response.status_code} {response.text}")

            await asyncio.gather(*(register(n) for n in names))
            await _login(client, names[0])  # warm-up: first request paths, pool connections

            started = time.perf_counter()
            latencies = sorted([await _login(client, names[i % USERS]) * 1000.0
                                for i in range(sequential)])  # fmt: skip
            sequential_s = time.perf_counter() - started
            hash_p50 = await asyncio.to_thread(_hash_p50_ms, hash_runs)

            rss_before = psutil.Process(proc.pid).memory_info().rss
            peaks: list[int] = []
            burst_s: list[float] = []
            for _ in range(bursts):
                with _RssSampler(proc.pid) as sampler:
                    start = time.perf_counter()
                    await asyncio.gather(*(_login(client, n) for n in names))
                    burst_s.append(time.perf_counter() - start)
                peaks.append(sampler.peak)
            rss_after = psutil.Process(proc.pid).memory_info().rss

    p50, p99 = statistics.median(latencies), quantile(latencies, 0.99)
    peak = max(peaks)
    bound = rss_before + (ARGON2_SLOTS * ARGON2_MIB + RSS_SLACK_MIB) * 2**20
    share = hash_p50 / p50
    return Result(
        name="login", value=p50, unit="ms", n=len(latencies), seconds=sequential_s,
        extra={
            "p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "max_ms": round(latencies[-1], 1),
            "hash_p50_ms": round(hash_p50, 1),
            "hash_share": f"hash_p50/login_p50 = {share:.2f}"
                          f" ({'dominated by the hash' if share >= 0.5 else 'NOT dominated by the hash'})",
            "rss_before_mib": _mib(rss_before),
            "peak_rss_mib": _mib(peak),
            "burst_peaks_mib": [_mib(p) for p in peaks],
            "rss_after_mib": _mib(rss_after),
            "bursts": f"{bursts} x {USERS} concurrent logins, "
                      + " / ".join(f"{s:.2f}" for s in burst_s) + " s",
            "target": f"peak <= before + {ARGON2_SLOTS} x {ARGON2_MIB} + {RSS_SLACK_MIB} MiB "
                      f"= {_mib(bound)} MiB: {'pass' if peak <= bound else 'FAIL'}",
        },
    )  # fmt: skip


async def login(ctx: BenchContext) -> Result:
    """Login p50 ms over HTTP against a write API process, with the hash's share and the
    process's peak RSS under bursts of concurrent logins in the notes."""
    with ctx.scratch_database("identity") as url:
        await asyncio.to_thread(migrate, url)
        # The sessions read model, as the projector or the read API would create it: the
        # write API rereads revoked sessions from it and warns while it is missing.
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await ensure_schema(conn, sessions)
        return await _measure_login(ctx, url)
