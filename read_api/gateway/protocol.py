"""The gateway's wire protocol (CONTRACT.md, WebSocket gateway): what clients send, what
the gateway answers, and the close codes.

Client frames are JSON objects named by `op`; server frames are JSON objects named by
`type`. Every server frame is built here, once, as bytes: an event frame is identical for
every subscriber of its topic, so it is encoded (and framed) once and the same bytes are
written to each connection.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Final, Literal

import msgspec
from websockets.frames import Frame, Opcode

# Close codes: the 4xxx ones mirror the HTTP statuses a client already knows.
UNAUTHORIZED: Final = 4401  # bad token, expired or revoked session
AUTH_TIMEOUT: Final = 4408  # no auth frame in time
TOO_SLOW: Final = 4429  # the client did not read fast enough: its queue was full

MAX_FRAME_BYTES: Final = 64 * 1024  # a client frame larger than this is closed with 1009
AUTH_TIMEOUT_S: Final = 5.0


# -- what clients send ---------------------------------------------------------------------


class Auth(msgspec.Struct, frozen=True):
    token: str


class Subscribe(msgspec.Struct, frozen=True):
    topic: str
    after_seq: Annotated[int, msgspec.Meta(ge=0)] | None = None
    # A command's position: first wait (up to 2 s) until the gateway has delivered it, as
    # X-Min-Position does for reads, so a channel just created or joined can be watched
    # and `subscribed` counts the command's own frames.
    min_position: str | None = None


class Unsubscribe(msgspec.Struct, frozen=True):
    topic: str


class Typing(msgspec.Struct, frozen=True):
    channel_id: str


class Ping(msgspec.Struct, frozen=True):
    pass


class Ack(msgspec.Struct, frozen=True):
    channel_id: str
    message_id: str


Op = Auth | Subscribe | Unsubscribe | Typing | Ping | Ack


class _Head(msgspec.Struct):
    op: str


_HEAD = msgspec.json.Decoder(_Head)
_DECODERS: Final[dict[str, msgspec.json.Decoder[Op]]] = {
    "auth": msgspec.json.Decoder(Auth),
    "subscribe": msgspec.json.Decoder(Subscribe),
    "unsubscribe": msgspec.json.Decoder(Unsubscribe),
    "typing": msgspec.json.Decoder(Typing),
    "ping": msgspec.json.Decoder(Ping),
    "ack": msgspec.json.Decoder(Ack),
}


class BadFrame(Exception):
    """A client frame the gateway cannot act on; `code` goes into the error frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse(raw: str | bytes) -> Op:
    """The op a client frame asks for; BadFrame (malformed_json, unknown_op, invalid_frame)."""
    try:
        head = _HEAD.decode(raw)
    except msgspec.ValidationError as e:
        raise BadFrame("invalid_frame", f"a frame is a JSON object with an op: {e}") from None
    except msgspec.DecodeError:
        raise BadFrame("malformed_json", "the frame is not valid JSON") from None
    except RecursionError:  # msgspec's refusal of JSON nested a thousand levels deep
        raise BadFrame("malformed_json", "the frame is nested too deeply") from None
    decoder = _DECODERS.get(head.op)
    if decoder is None:
        raise BadFrame("unknown_op", f"unknown op {head.op[:40]!r}")
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as e:
        raise BadFrame("invalid_frame", str(e)) from None
    except RecursionError:
        raise BadFrame("malformed_json", "the frame is nested too deeply") from None


def parse_id(raw: str) -> str | None:
    """The canonical text of a UUID, or None when `raw` is not one."""
    try:
        return str(uuid.UUID(raw))
    except (ValueError, AttributeError, TypeError):
        return None


# -- what the gateway sends ----------------------------------------------------------------


class _Frame(msgspec.Struct, tag_field="type", omit_defaults=True):
    pass


class Authenticated(_Frame, tag="authenticated"):
    user_id: str
    expires_at: int  # the access token's expiry (Unix seconds): renew before it


class Subscribed(_Frame, tag="subscribed"):
    topic: str
    seq: int


class Unsubscribed(_Frame, tag="unsubscribed"):
    topic: str


class Error(_Frame, tag="error"):
    code: str
    message: str
    topic: str | None = None


class Pong(_Frame, tag="pong"):
    pass


class TypingFrame(_Frame, tag="typing"):
    channel_id: str
    user_id: str


class Presence(_Frame, tag="presence"):
    channel_id: str
    user_id: str
    status: Literal["online", "offline"]


class Event(_Frame, tag="event"):
    topic: str
    seq: int
    position: str
    name: str
    data: msgspec.Raw  # the feed's client view, as stored


# Every server frame's `type`.
FRAME_TYPES: Final = tuple(str(c.__struct_config__.tag) for c in _Frame.__subclasses__())

_ENCODER = msgspec.json.Encoder()
PONG: Final = _ENCODER.encode(Pong())


def encode(frame: _Frame) -> bytes:
    """A server frame's JSON."""
    return _ENCODER.encode(frame)


def error(code: str, message: str, topic: str | None = None) -> bytes:
    """An error frame's JSON."""
    return _ENCODER.encode(Error(code=code, message=message, topic=topic))


def wire(payload: bytes) -> bytes:
    """`payload` as a complete, unmasked WebSocket text frame: the bytes a server writes.

    Connections negotiate no extension (compression is off), so these bytes are the same
    for every connection and can be written to many as they are.
    """
    return Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
