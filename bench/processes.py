"""Hubbub's own processes for the workloads that go through them: `python -m infra.cli
<part>` (write-api, read-api, relay, projector) with a run's settings, as `hubbub run`
starts them, waited for, measured and always stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import psutil

from infra.processes import stop_processes
from infra.settings import Settings

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    """A TCP port nothing listens on now, for a server to bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_part(part: str, settings: Settings, module: str = "infra.cli") -> subprocess.Popen[bytes]:
    """`hubbub <part>` (or `python -m <module> <part>`) in a process of its own, reading
    `settings` (warnings only).

    In a session of its own, as `hubbub run`'s supervisor starts each part: with the
    kernel's autogroup scheduling (on by default), the parts are then each scheduled as a
    group of their own, as they are in production, rather than all of them sharing the
    bench's one group's share of the CPU (session 12: command to frame p50 a few percent
    lower, for Hubbub and the floor alike)."""
    env = {**os.environ, **replace(settings, log_level="WARNING").to_env()}
    return subprocess.Popen([sys.executable, "-m", module, part], env=env, start_new_session=True)


def stop_parts(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process, then wait for each (killing one that outstays the grace)."""
    stop_processes(procs, grace=STOP_TIMEOUT_S)


@contextlib.contextmanager
def running(
    settings: Settings, *parts: str, module: str = "infra.cli"
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The named parts, started in order, stopped on exit whatever happened."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for part in parts:
            procs.append(start_part(part, settings, module))
        yield procs
    finally:
        stop_parts(procs)


async def wait_live(
    client: httpx.AsyncClient, proc: subprocess.Popen[bytes], what: str = "the write API"
) -> None:
    """Poll the client's base URL's /health/live until it answers 200; RuntimeError if
    the process exits or START_TIMEOUT_S passes first."""
    deadline = time.perf_counter() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting")
        try:
            if (await client.get("/health/live")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{what} was not live within {START_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.1)


async def wait_all_live(urls: dict[str, tuple[str, subprocess.Popen[bytes]]]) -> None:
    """wait_live for each `name: (base_url, process)`."""
    for what, (url, proc) in urls.items():
        async with httpx.AsyncClient(base_url=url, timeout=5.0) as client:
            await wait_live(client, proc, what)


class CpuWatch:
    """CPU seconds used by a set of processes (and their children) since a mark."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, root in self._procs.items():
            total = 0.0
            with contextlib.suppress(psutil.Error):
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        t = p.cpu_times()
                        total += t.user + t.system
            out[name] = total
        return out

    def mark(self) -> None:
        """Start counting from now."""
        self._start = self._now()

    def since(self) -> dict[str, float]:
        """CPU seconds per process since the mark."""
        now = self._now()
        return {name: now[name] - self._start.get(name, 0.0) for name in now}
