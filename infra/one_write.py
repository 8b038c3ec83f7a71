"""uvicorn's httptools protocol with a response's head and body sent in one write.

uvicorn writes a response's status line and headers, then its body, as two writes: two
send() calls and two TCP segments, and the client wakes for each. On loopback the sender
pays for both ends of each segment, so the second write cost the read and write APIs a
tenth of their CPU a request. Here the head waits for the body and both go out in one
write: a head waits at most until the event loop's next turn, and bytes keep their order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _Gathering:
    """A transport that holds a response's head until its body comes, and sends the two
    as one write. A head is held at most until the loop's next turn (a response whose
    body is streamed, or has none, still goes out); everything else is written at once."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        if self._head is not None:
            data, self._head = self._head + data, None
        elif data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n"):
            self._head = data  # uvicorn writes a response's head, then its body
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        if self._head is not None:
            data, self._head = self._head, None
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()  # an upgrade: the new protocol may write to the transport itself
        self._transport.set_protocol(protocol)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHttpTools(HttpToolsProtocol):
    """HttpToolsProtocol writing through a _Gathering transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_Gathering(transport, self.loop))  # type: ignore[arg-type]
