"""Delivery acks: `{"op":"ack"}` becomes the write API's `POST /v1/channels/{id}/delivered`,
made with the connection's own access token. The gateway is read side and never touches
commands itself; the write API decides, records and answers as for any client.
"""

from __future__ import annotations

import asyncio
from typing import Final

import httpx
import structlog

from read_api.gateway import metrics, protocol
from read_api.gateway.hub import Client

log = structlog.get_logger(__name__)

IN_FLIGHT_PER_CLIENT: Final = 8


class Acks:
    """Records delivery receipts through the write API, a few at a time per connection."""

    def __init__(self, write_api_url: str, *, timeout_s: float = 10.0) -> None:
        self.http = httpx.AsyncClient(
            base_url=write_api_url, timeout=timeout_s,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )  # fmt: skip
        self._in_flight: dict[Client, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def record(self, client: Client, channel_id: str, message_id: str) -> bytes | None:
        """Start recording the receipt; an error frame's JSON when it cannot be started."""
        count = self._in_flight.get(client, 0)
        if count >= IN_FLIGHT_PER_CLIENT:
            return protocol.error("slow_down", "too many acks in flight; send the latest only")
        self._in_flight[client] = count + 1
        task = asyncio.create_task(self._post(client, channel_id, message_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    async def _post(self, client: Client, channel_id: str, message_id: str) -> None:
        try:
            response = await self.http.post(
                f"/v1/channels/{channel_id}/delivered", json={"message_id": message_id},
                headers={"Authorization": f"Bearer {client.token}"},
            )  # fmt: skip
        except httpx.HTTPError as e:
            log.warning("ack not recorded", error=repr(e))
            client.push(protocol.wire(protocol.error("unavailable", "the ack was not recorded")))
            metrics.ERROR_FRAMES.inc()
            return
        finally:
            left = self._in_flight.get(client, 1) - 1
            if left > 0:
                self._in_flight[client] = left
            else:
                self._in_flight.pop(client, None)
        if response.status_code >= 300:
            code, detail = "ack_failed", f"the write API answered {response.status_code}"
            try:
                problem = response.json()
                code, detail = str(problem.get("code", code)), str(problem.get("detail", detail))
            except ValueError:
                pass
            client.push(protocol.wire(protocol.error(code, detail)))
            metrics.ERROR_FRAMES.inc()

    async def close(self) -> None:
        """Stop the acks in flight and the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.aclose()
