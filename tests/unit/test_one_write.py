"""The uvicorn protocol's gathering transport: a response's head and body go out in one
write, in order, and nothing is held past the loop's turn or past the connection's end."""

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


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


async def test_head_and_body_go_out_as_one_write() -> None:
    inner = Recording()
    gathering = _Gathering(inner, asyncio.get_running_loop())
    gathering.write(HEAD)
    assert inner.writes == []  # the head waits for its body
    gathering.write(b"{}")
    assert inner.writes == [HEAD + b"{}"]
    await asyncio.sleep(0)  # the fallback flush finds nothing held
    assert inner.writes == [HEAD + b"{}"]


async def test_a_head_without_a_body_is_not_held_past_the_turn() -> None:
    inner = Recording()
    gathering = _Gathering(inner, asyncio.get_running_loop())
    gathering.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 204 No Content\r\n\r\n"]


async def test_other_writes_go_out_at_once_in_order() -> None:
    inner = Recording()
    gathering = _Gathering(inner, asyncio.get_running_loop())
    gathering.write(memoryview(b"chunk 1"))
    gathering.writelines([b"chunk 2", b"chunk 3"])
    assert inner.writes == [b"chunk 1", b"chunk 2", b"chunk 3"]


async def test_close_sends_a_held_head_first_and_nothing_after() -> None:
    inner = Recording()
    gathering = _Gathering(inner, asyncio.get_running_loop())
    gathering.write(HEAD)
    gathering.close()
    assert inner.writes == [HEAD] and inner.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing to send
    assert inner.writes == [HEAD]


async def test_everything_else_is_the_transport_s() -> None:
    inner = Recording()
    gathering = _Gathering(inner, asyncio.get_running_loop())
    assert gathering.get_extra_info("sockname") == ("127.0.0.1", 8000)
    assert gathering.is_closing() is False
