"""Facts about where the figures were measured: without them a figure means little."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Final

import psutil
import psycopg

_SETTINGS = ("fsync", "synchronous_commit", "wal_sync_method", "shared_buffers", "max_connections")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# The loop sessions have timed by hand (`python3 -c` with this text) to compare machines:
# on the 2-core development machines it has taken 0.19 to 0.27 s, and the latency figures
# at 1,000 messages/s moved with it.
_ADDITIONS: Final = "x = 0\nfor i in range(3_000_000):\n    x += i\n"


def python_speed(rounds: int = 3) -> float:
    """Seconds this machine's Python takes for 3 million additions, the best of `rounds`
    (run as `python3 -c` runs it: at module level, where every name is a global)."""
    code = compile(_ADDITIONS, "<additions>", "exec")
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        exec(code, {})  # a fresh module namespace each round
        best = min(best, time.perf_counter() - started)
    return best


def _commit() -> str:
    # Read-only: rev-parse never touches the index or the work tree.
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def facts(url: str, postgres_source: str) -> dict[str, str]:
    """Date, CPU, memory, versions, and the PostgreSQL settings that decide commit cost."""
    out = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} logical, {psutil.cpu_count(logical=False)} physical",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_speed": f"{python_speed():.3f} s for 3 million additions (best of 3)",
        "psycopg": version("psycopg"),
        "commit": _commit(),
        "postgresql_source": postgres_source,
    }
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        out["postgresql"] = str(row[0]) if row else "unknown"
        for name in _SETTINGS:
            row = conn.execute(f"SHOW {name}").fetchone()
            out[name] = str(row[0]) if row else "unknown"
    return out
