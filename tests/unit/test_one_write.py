"""The uvicorn protocol's gathering transport: a response goes out in one write, in order,
and nothing is held past the loop's turn or past the connection's end."""

from __future__ import annotations

import asyncio

from infra.one_write import _Gathering


class Recording(asyncio.Transport):
    """A transport that keeps what it is asked to write, and whether it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 8000) if name == "sockname" else default


async def test_head_and_body_go_out_as_one_write_on_the_next_turn() -> None:
    inner = Recording()
    gathering = _Gathering(inner, asyncio.get_running_loop())
    gathering.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    gathering.write(b"{}")
    assert inner.writes == []  # held for this turn of the loop
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


async def test_a_lone_write_is_not_held_past_the_turn() -> None:
    inner = Recording()
    gathering = _Gathering(inner, asyncio.get_running_loop())
    gathering.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    await asyncio.sleep(0)
    gathering.write(memoryview(b"next"))
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 100 Continue\r\n\r\n", b"next"]


async def test_close_sends_what_is_held_first_and_nothing_after() -> None:
    inner = Recording()
    gathering = _Gathering(inner, asyncio.get_running_loop())
    gathering.writelines([b"a", b"b"])
    gathering.close()
    assert inner.writes == [b"ab"] and inner.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing to send
    assert inner.writes == [b"ab"]


async def test_everything_else_is_the_transport_s() -> None:
    inner = Recording()
    gathering = _Gathering(inner, asyncio.get_running_loop())
    assert gathering.get_extra_info("sockname") == ("127.0.0.1", 8000)
    assert gathering.is_closing() is False
