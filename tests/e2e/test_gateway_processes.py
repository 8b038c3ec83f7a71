"""Two `hubbub gateway` processes side by side on one stack: each delivers to its own
clients, and presence crosses between them (a disconnect, or a gateway killed outright,
shows as offline within seconds)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from infra.processes import stop_processes
from infra.settings import Settings
from infra.store import EventStore
from tests.fix_chat import create_channel, join, say, users
from tests.fix_gateway import Frame, message_with, settled, signed_in, subscribe, token_of, until
from tests.fix_stack import Stack, free_port

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]


class GatewayProcess:
    """`hubbub gateway` on a port of its own."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            **replace(settings, log_level="WARNING", gateway_port=self.port).to_env(),
        }
        self.log = settings.data_dir / f"gateway-{self.port}.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "infra.cli", "gateway"], env=env,
                                         stdout=out, stderr=out)  # fmt: skip

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    async def ready(self, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}") as http:
            while True:
                assert self.proc.poll() is None, self.log.read_text()
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/health/ready")).status_code == 200:
                        return
                assert time.monotonic() < deadline, "the gateway did not become ready"
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        stop_processes([self.proc])


@contextlib.contextmanager
def gateway_processes(settings: Settings, n: int) -> Iterator[list[GatewayProcess]]:
    started = [GatewayProcess(settings) for _ in range(n)]
    try:
        yield started
    finally:
        for gateway in started:
            gateway.stop()


def presence_of(user_id: str, status: str) -> Frame:
    return {"type": "presence", "user_id": user_id, "status": status}


def is_presence(user_id: str, status: str) -> Callable[[Frame], bool]:
    return lambda f: f["type"] == "presence" and f["user_id"] == user_id and f["status"] == status


async def test_two_gateways_deliver_to_their_own_and_share_presence(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    ann, bob, carol = await users(stack, EventStore(pool), 3)
    cid = await create_channel(stack.write, ann)
    await join(stack.write, cid, bob, carol)
    await settled(pool)
    with gateway_processes(stack.settings, 2) as (one, two):
        await asyncio.gather(one.ready(), two.ready())
        anns = await signed_in(one.url, token_of(ann))
        assert (await subscribe(anns, f"channel:{cid}"))["type"] == "subscribed"

        # bob comes online on the other gateway; ann hears of it on hers
        bobs = await signed_in(two.url, token_of(bob))
        assert (await subscribe(bobs, f"channel:{cid}"))["type"] == "subscribed"
        got = await until(anns, is_presence(bob.id, "online"), seconds=5, presence=True)
        assert got[-1] == {**presence_of(bob.id, "online"), "channel_id": cid}

        # a message reaches both, each through its own gateway
        await say(stack.write, cid, carol, "to both")
        for ws in (anns, bobs):
            frame = (await until(ws, message_with("to both")))[-1]
            assert frame["topic"] == f"channel:{cid}"

        # bob leaves: offline within seconds
        await bobs.close()
        started = time.monotonic()
        await until(anns, is_presence(bob.id, "offline"), seconds=5, presence=True)
        assert time.monotonic() - started < 3

        # carol's gateway dies outright: its heartbeats stop, and she goes offline too
        carols = await signed_in(two.url, token_of(carol))
        await until(anns, is_presence(carol.id, "online"), seconds=5, presence=True)
        two.proc.send_signal(signal.SIGKILL)
        two.proc.wait(10)
        started = time.monotonic()
        await until(anns, is_presence(carol.id, "offline"), seconds=10, presence=True)
        assert time.monotonic() - started < 7
        with contextlib.suppress(Exception):
            await carols.close()

        # the surviving gateway carries on
        await say(stack.write, cid, carol, "still")
        await until(anns, message_with("still"))
