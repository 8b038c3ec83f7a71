"""Prometheus metrics for the processes that serve no HTTP: the relay, the projector and the
scheduler each answer GET /metrics on a port of their own.

`HUBBUB_METRICS_PORT` (default 9100) is the relay's port; the projector's is one more and
the scheduler's two more (9100, 9101, 9102), on `HUBBUB_HOST`. `0` turns the servers off.
The HTTP services (write API, read API, gateway) serve /metrics on their own port instead.

The port is read here rather than in infra.settings because only these three processes
use it, each once at start.
"""

from __future__ import annotations

import os

import structlog
from prometheus_client import start_http_server

from infra.settings import Settings

log = structlog.get_logger(__name__)

DEFAULT_BASE_PORT = 9100
# Offsets from the base port: adding a process adds a line here, never moves another.
OFFSETS = {"relay": 0, "projector": 1, "scheduler": 2}


def metrics_port(process: str, environ: dict[str, str] | None = None) -> int | None:
    """The port `process` serves /metrics on, or None when metrics servers are off."""
    raw = (environ if environ is not None else os.environ).get("HUBBUB_METRICS_PORT", "")
    try:
        base = int(raw) if raw.strip() else DEFAULT_BASE_PORT
    except ValueError:
        raise ValueError(f"HUBBUB_METRICS_PORT must be a port number, got {raw!r}") from None
    if base == 0:
        return None
    port = base + OFFSETS[process]
    if not 1 <= port <= 65535:
        raise ValueError(f"HUBBUB_METRICS_PORT {base} puts the {process} on port {port}")
    return port


def serve_metrics(settings: Settings, process: str) -> int | None:
    """Serve the process's metrics in a background thread; the port, or None when off.

    A port already taken (a second scheduler on the same machine) is a warning, never a
    reason not to run: metrics are for watching, the work matters more.
    """
    port = metrics_port(process)
    if port is None:
        return None
    try:
        start_http_server(port, addr=settings.host)
    except OSError as e:
        log.warning("metrics port unavailable; serving no metrics", port=port, error=str(e))
        return None
    log.info("metrics served", url=f"http://{settings.host}:{port}/metrics")
    return port
