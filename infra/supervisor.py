"""The process tree behind `hubbub run`: one supervisor, one child process per part.

Children run in their own sessions, so a Ctrl-C in the terminal reaches the supervisor
alone and the supervisor decides how everything stops. A child that dies is started again
after a pause that doubles with every quick failure; one that ran healthily for a while
starts over from the shortest pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from infra.embedded import ServerProcess, start_nats, start_postgres
from infra.settings import Settings

__all__ = [
    "EXIT_CONFIG_ERROR",
    "Backoff",
    "Child",
    "Supervisor",
    "serve_all",
    "start_embedded",
    "stop_servers",
    "url_env",
]

# The CLI's exit code for bad configuration: starting the child again cannot fix that.
EXIT_CONFIG_ERROR = 2


@dataclass(frozen=True)
class Child:
    """A part of the system to keep running: its name, command line and extra environment."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Backoff:
    """How long to wait before restarting a child that exited."""

    initial: float = 0.5
    maximum: float = 10.0
    # A child that ran this long was healthy: its next failure waits `initial` again.
    reset_after: float = 30.0

    def next(self, delay: float, ran_for: float) -> tuple[float, float]:
        """The pause before this restart and the one to remember for the next."""
        if ran_for >= self.reset_after:
            delay = self.initial
        return delay, min(delay * 2, self.maximum)


def _describe(returncode: int) -> dict[str, int | str]:
    """asyncio reports death by signal N as -N; say which signal it was."""
    if returncode >= 0:
        return {"exit_code": returncode}
    try:
        return {"signal": signal.Signals(-returncode).name}
    except ValueError:  # a real-time signal has no name
        return {"signal": str(-returncode)}


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # Each child leads its own process group: signalling the group reaches whatever the
    # child started too. It may have exited in the meantime, which is fine.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


async def _until_done_or(task: asyncio.Future[int], event: asyncio.Event) -> None:
    """Wait until `task` is done or `event` is set, leaving `task` running either way."""
    waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


class Supervisor:
    """Keeps a set of child processes running until told to stop (SIGINT or SIGTERM)."""

    def __init__(
        self,
        children: Sequence[Child],
        *,
        backoff: Backoff | None = None,
        stop_timeout: float = 10.0,
    ) -> None:
        self.children = list(children)
        self.backoff = backoff or Backoff()
        self.stop_timeout = stop_timeout
        self._pids: dict[str, int] = {}
        self._stopping = asyncio.Event()
        self._kill_now = asyncio.Event()
        self._fatal: str | None = None
        # A logger per supervisor, not per module: it resolves structlog's configuration at
        # first use, so each run (and each test) logs through the configuration of its time.
        self._log = structlog.get_logger(__name__)

    @property
    def pids(self) -> dict[str, int]:
        """The process id of every child running now, by name."""
        return dict(self._pids)

    def stop(self, reason: str = "requested") -> None:
        """Begin a clean stop; a second request kills whatever is still running."""
        if self._stopping.is_set():
            self._log.warning("stop requested again: killing children now")
            self._kill_now.set()
            return
        self._log.info("stopping children", reason=reason)
        self._stopping.set()

    async def run(self) -> int:
        """Run every child until a signal or a fatal error; 0 after a clean stop, else 1."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop, sig.name)
        try:
            # Each child's task stops its own child once `_stopping` is set, so stopping
            # is a matter of setting it and waiting for every task to finish.
            await asyncio.gather(*(self._keep_running(child) for child in self.children))
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if self._fatal is not None:
            self._log.error("stopped after a fatal error", error=self._fatal)
            return 1
        self._log.info("all children stopped")
        return 0

    def _fail(self, error: str) -> None:
        if self._fatal is None:
            self._fatal = error
        if not self._stopping.is_set():  # a second stop() would mean "kill now"
            self.stop(reason=error)

    async def _keep_running(self, child: Child) -> None:
        log = self._log.bind(child=child.name)
        delay = self.backoff.initial
        restarts = 0
        while not self._stopping.is_set():
            started_at = time.monotonic()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *child.argv,
                    env={**os.environ, **child.env},
                    stdin=asyncio.subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as e:
                # A missing executable stays missing: retrying would only spin.
                log.error("child could not be started", argv=list(child.argv), error=str(e))
                self._fail(f"{child.name} could not be started: {e}")
                return
            self._pids[child.name] = proc.pid
            log.info("child started", pid=proc.pid, restarts=restarts)
            try:
                returncode = await self._wait_or_stop(child, proc)
            finally:
                del self._pids[child.name]
            if returncode is None:
                return  # stopped on request
            log.warning("child exited", pid=proc.pid, **_describe(returncode))
            if returncode == EXIT_CONFIG_ERROR:
                self._fail(f"{child.name} exited with {returncode} (bad configuration)")
                return
            pause, delay = self.backoff.next(delay, time.monotonic() - started_at)
            restarts += 1
            log.info("child restarting", delay_s=pause, restarts=restarts)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)

    async def _wait_or_stop(self, child: Child, proc: asyncio.subprocess.Process) -> int | None:
        """The child's exit code if it exits by itself; None if it was stopped on request."""
        exited = asyncio.ensure_future(proc.wait())
        try:
            await _until_done_or(exited, self._stopping)
            if exited.done() and not self._stopping.is_set():
                return exited.result()

            log = self._log.bind(child=child.name, pid=proc.pid)
            if not exited.done():
                _signal_group(proc.pid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.stop_timeout):
                        await _until_done_or(exited, self._kill_now)
            if not exited.done():
                log.warning("child still running: killing it")
                _signal_group(proc.pid, signal.SIGKILL)
            log.info("child stopped", **_describe(await exited))
            return None
        except asyncio.CancelledError:
            # Cancelled from outside rather than stopped: never leave the child behind.
            _signal_group(proc.pid, signal.SIGKILL)
            exited.cancel()
            raise


def start_embedded(settings: Settings) -> tuple[Settings, list[ServerProcess]]:
    """Fill in unset URLs with embedded servers, reusing ones already running.

    Returns the settings with both URLs set and the servers, which only stop (on
    `.stop()`) if this process started them.
    """
    servers: list[ServerProcess] = []
    try:
        if settings.database_url is None:
            servers.append(start_postgres(settings.data_dir))
            settings = replace(settings, database_url=servers[-1].url)
        if settings.nats_url is None:
            servers.append(start_nats(settings.data_dir))
            settings = replace(settings, nats_url=servers[-1].url)
    except BaseException:
        stop_servers(servers)
        raise
    return settings, servers


def stop_servers(servers: Sequence[ServerProcess]) -> None:
    """Stop embedded servers in the reverse order of their start (no-op for reused ones)."""
    for server in reversed(servers):
        server.stop()


def url_env(settings: Settings) -> dict[str, str]:
    """The environment variables that point a child process at the same servers."""
    env: dict[str, str] = {}
    if settings.database_url is not None:
        env["HUBBUB_DATABASE_URL"] = settings.database_url
    if settings.nats_url is not None:
        env["HUBBUB_NATS_URL"] = settings.nats_url
    return env


def serve_all(
    settings: Settings,
    children: Sequence[Child],
    *,
    on_ready: Callable[[Settings], None] | None = None,
) -> int:
    """`hubbub run`: servers, migrations, then every child until stopped; the exit code.

    Embedded servers this call started are stopped after the children, which still use
    them while they shut down.
    """
    from infra.db import migrate

    settings, servers = start_embedded(settings)
    try:
        assert settings.database_url is not None  # start_embedded fills it in
        migrate(settings.database_url)
        # In development the JWT secret is generated on first use: make it now, or the
        # two APIs could each generate their own at the same moment and disagree.
        settings.resolved_jwt_secret()
        env = url_env(settings)
        children = [replace(child, env={**child.env, **env}) for child in children]
        if on_ready is not None:
            on_ready(settings)
        return asyncio.run(Supervisor(children).run())
    finally:
        stop_servers(servers)
