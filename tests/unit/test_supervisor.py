"""The supervisor against real child processes (small `python -c` scripts)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from infra.supervisor import Backoff, Child, Supervisor

FAST = Backoff(initial=0.05, maximum=0.1, reset_after=60.0)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def running(pid: int) -> bool:
    """Whether `pid` is a live process; a zombie nobody has reaped yet counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: os.kill's answer is all we have
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def test_backoff_doubles_up_to_the_maximum_and_resets_after_healthy_running() -> None:
    backoff = Backoff(initial=0.5, maximum=10.0, reset_after=30.0)
    delay, pauses = backoff.initial, []
    for _ in range(7):
        pause, delay = backoff.next(delay, ran_for=1.0)
        pauses.append(pause)
    assert pauses == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.next(delay, ran_for=30.0) == (0.5, 1.0)


async def test_a_crashing_child_is_restarted_and_the_restart_logged() -> None:
    supervisor = Supervisor([Child("crasher", python("raise SystemExit(3)"))], backoff=FAST)
    with capture_logs() as logs:
        run = asyncio.create_task(supervisor.run())
        await eventually(lambda: len(events(logs, "child started")) >= 4)
        supervisor.stop()
        assert await asyncio.wait_for(run, 5) == 0

    exited = events(logs, "child exited")
    assert exited[0]["child"] == "crasher"
    assert exited[0]["exit_code"] == 3
    restarting = events(logs, "child restarting")
    assert [e["delay_s"] for e in restarting[:3]] == [0.05, 0.1, 0.1]
    assert [e["restarts"] for e in events(logs, "child started")[:4]] == [0, 1, 2, 3]


async def test_sigterm_stops_every_child_and_leaves_none_running(tmp_path: Path) -> None:
    grandchild_file = tmp_path / "grandchild.pid"
    spawner = (
        "import pathlib, subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"pathlib.Path({str(grandchild_file)!r}).write_text(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    children = [
        Child("sleeper", python("import time; time.sleep(60)")),
        Child("spawner", python(spawner)),
    ]
    supervisor = Supervisor(children, stop_timeout=5.0)
    run = asyncio.create_task(supervisor.run())
    await eventually(lambda: len(supervisor.pids) == 2 and grandchild_file.exists())
    await eventually(lambda: grandchild_file.read_text().strip() != "")
    pids = [*supervisor.pids.values(), int(grandchild_file.read_text())]
    assert all(running(pid) for pid in pids)

    began = time.monotonic()
    # run() installed its handlers before starting any child, so this reaches it, not pytest.
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(run, 5) == 0
    assert time.monotonic() - began < 5.0  # they obeyed SIGTERM: no waiting for SIGKILL
    # The grandchild shares its parent's process group, so it got SIGTERM as well.
    await eventually(lambda: not any(running(pid) for pid in pids), within=2.0)
    assert supervisor.pids == {}


async def test_a_child_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    stubborn = (
        "import pathlib, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n"
    )
    supervisor = Supervisor([Child("stubborn", python(stubborn))], stop_timeout=0.5)
    with capture_logs() as logs:
        run = asyncio.create_task(supervisor.run())
        await eventually(lambda: ready.exists() and "stubborn" in supervisor.pids)
        pid = supervisor.pids["stubborn"]
        began = time.monotonic()
        supervisor.stop()
        assert await asyncio.wait_for(run, 5) == 0
        took = time.monotonic() - began

    assert 0.5 <= took < 3.0
    assert not running(pid)
    assert events(logs, "child still running: killing it")
    assert events(logs, "child stopped")[0]["signal"] == "SIGKILL"


async def test_a_second_stop_request_kills_at_once(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    stubborn = (
        "import pathlib, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n"
    )
    supervisor = Supervisor([Child("stubborn", python(stubborn))], stop_timeout=30.0)
    run = asyncio.create_task(supervisor.run())
    await eventually(lambda: ready.exists() and "stubborn" in supervisor.pids)
    supervisor.stop()
    await asyncio.sleep(0.1)
    supervisor.stop()
    assert await asyncio.wait_for(run, 3) == 0


async def test_a_configuration_error_is_fatal_and_stops_the_others() -> None:
    children = [
        Child("sleeper", python("import time; time.sleep(60)")),
        Child("misconfigured", python("raise SystemExit(2)")),
    ]
    supervisor = Supervisor(children, backoff=FAST, stop_timeout=5.0)
    with capture_logs() as logs:
        assert await asyncio.wait_for(supervisor.run(), 5) == 1
    assert not events(logs, "child restarting")
    assert "misconfigured" in events(logs, "stopped after a fatal error")[0]["error"]


async def test_a_child_that_cannot_be_started_is_fatal(tmp_path: Path) -> None:
    supervisor = Supervisor([Child("ghost", [str(tmp_path / "no-such-program")])])
    assert await asyncio.wait_for(supervisor.run(), 5) == 1


async def test_the_environment_reaches_the_child(tmp_path: Path) -> None:
    out = tmp_path / "env"
    code = f"import os, pathlib; pathlib.Path({str(out)!r}).write_text(os.environ['HUBBUB_X'])"
    supervisor = Supervisor([Child("env", python(code), {"HUBBUB_X": "42"})], backoff=FAST)
    run = asyncio.create_task(supervisor.run())
    await eventually(lambda: out.exists() and out.read_text() == "42")
    supervisor.stop()
    assert await asyncio.wait_for(run, 5) == 0
