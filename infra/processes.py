"""Stopping child processes: ask, wait, then insist."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence

GRACE_S = 15.0


def stop_processes(
    procs: Sequence[subprocess.Popen[bytes]],
    sig: signal.Signals = signal.SIGTERM,
    grace: float = GRACE_S,
) -> None:
    """Send `sig` to every process still running, then wait for each; one that outstays
    `grace` is killed. Signalled all at once, so several stop in one grace, not in turn."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    for proc in procs:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
