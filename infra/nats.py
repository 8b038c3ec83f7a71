"""NATS and JetStream plumbing: connecting, and the event stream of CONTRACT.md."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from infra.settings import Settings

log = structlog.get_logger(__name__)

# JetStream drops a message whose Nats-Msg-Id it saw within this window: a relay that
# restarts between publishing and checkpointing republishes, and the copies vanish here.
DUPLICATE_WINDOW_S = 300.0


async def connect(url: str, *, name: str, initial_timeout: float = 5.0, **options: Any) -> NATS:
    """Connect, then reconnect forever: NATS is the fast road, and its absence is survivable.

    The first connection has a deadline (TimeoutError): nats-py would otherwise retry a
    server that is down for ever, and the caller could not fall back on PostgreSQL.
    """

    async def on_error(e: Exception) -> None:
        log.warning("nats error", error=str(e))

    async def on_disconnected() -> None:
        log.warning("nats disconnected")

    async def on_reconnected() -> None:
        log.info("nats reconnected")

    nc = NATS()
    try:
        await asyncio.wait_for(
            nc.connect(
                url,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,  # type: ignore[arg-type]  # seconds; a float works
                connect_timeout=2,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                **options,
            ),
            initial_timeout,
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await nc.close()
        raise
    return nc


def stream_config(settings: Settings) -> StreamConfig:
    """The JetStream stream every event is published on."""
    return StreamConfig(
        name=settings.nats_stream,
        subjects=[settings.subject_filter],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_age=7 * 24 * 3600.0,
    )


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """Create the event stream, or bring an existing one's configuration up to date."""
    config = stream_config(settings)
    try:
        await js.stream_info(settings.nats_stream)
    except NotFoundError:
        await js.add_stream(config)
        log.info("jetstream stream created", stream=settings.nats_stream)
        return
    await js.update_stream(config)
