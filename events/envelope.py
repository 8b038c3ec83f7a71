"""The event envelope of CONTRACT.md, the position token, and the tamper-evidence hashes.

Pure data and pure functions: the store writes with them, the relay publishes with them,
projections and auditors read with them.
"""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime
from typing import NamedTuple
from uuid import UUID

import msgspec

GENESIS_HASH = bytes(32)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TOKEN_LEN = 32


class Position(NamedTuple):
    """A place in the commit-safe global order: (transaction id, position) pairs compare as
    the log is read. Clients only ever see it as an opaque token."""

    txid: int
    position: int

    def token(self) -> str:
        """The opaque, fixed-width, sortable string clients store and send back."""
        return f"{self.txid:016x}{self.position:016x}"

    @classmethod
    def parse(cls, token: str) -> Position:
        """Read a token; ValueError when it is not one of ours."""
        if len(token) != _TOKEN_LEN:
            raise ValueError("a position token is 32 hex digits")
        try:
            return cls(int(token[:16], 16), int(token[16:], 16))
        except ValueError as e:
            raise ValueError("a position token is 32 hex digits") from e


ORIGIN = Position(0, 0)


class Metadata(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Who asked, in answer to what, as part of which trace."""

    actor_id: str | None = None
    correlation_id: str
    causation_id: str | None = None
    traceparent: str | None = None
    idempotency_key: str | None = None


class MetadataView(msgspec.Struct, frozen=True, kw_only=True):
    """Metadata as readers pick from it (projector logs, feed frames): every field
    optional, so a reader never fails on what a writer left out."""

    actor_id: str | None = None
    correlation_id: str | None = None
    traceparent: str | None = None


METADATA_VIEW = msgspec.json.Decoder(MetadataView)


def traced(metadata: bytes) -> MetadataView | None:
    """The metadata of an event that carries a W3C traceparent; None for the others, most
    events, at the cost of one substring test (and for undecodable metadata)."""
    if b"traceparent" not in metadata:
        return None
    try:
        view = METADATA_VIEW.decode(metadata)
    except msgspec.DecodeError:
        return None
    return view if view.traceparent else None


class Envelope(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One recorded event as the store, NATS and the audit export carry it."""

    event_id: str
    stream_id: str
    stream_version: int
    position: str
    type: str
    schema_version: int
    recorded_at: datetime
    data: msgspec.Raw
    metadata: msgspec.Raw
    prev_hash: str
    hash: str

    @property
    def at(self) -> Position:
        return Position.parse(self.position)

    @property
    def category(self) -> str:
        return category_of(self.stream_id)


ENVELOPE_DECODER = msgspec.json.Decoder(Envelope)
ENCODER = msgspec.json.Encoder()


def category_of(stream_id: str) -> str:
    """A stream's category is its prefix: `user-0192...` belongs to `user`."""
    return stream_id.split("-", 1)[0]


_u32 = struct.Struct(">I").pack
_two_i64 = struct.Struct(">qq").pack


def content_digest(
    event_id: UUID | bytes,
    stream_id: str,
    type: str,
    schema_version: int,
    data: bytes,
    metadata: bytes,
) -> bytes:
    """SHA-256 over everything the writer decides about an event, each part length-framed.
    The id may come as its 16 bytes (a verifier reading them straight from PostgreSQL)."""
    eid = event_id if isinstance(event_id, bytes) else event_id.bytes
    sid, kind = stream_id.encode(), type.encode()
    # One buffer, one update: the same bytes as hashing part by part, in 80% of the time.
    return hashlib.sha256(
        b"".join((
            b"hubbub-event-v1", _u32(len(eid)), eid, _u32(len(sid)), sid, _u32(len(kind)), kind,
            b"\x00\x00\x00\x04", schema_version.to_bytes(4, "big"), _u32(len(data)), data,
            _u32(len(metadata)), metadata,
        ))
    ).digest()  # fmt: skip


def chain_hash(prev_hash: bytes, stream_version: int, recorded_micros: int, digest: bytes) -> bytes:
    """An event's hash: its digest chained to the stream's previous hash (the store's
    single-event statements compute the same in SQL: infra.store._chain_hash_sql)."""
    return hashlib.sha256(
        b"".join((prev_hash, _two_i64(stream_version, recorded_micros), digest))
    ).digest()


def global_link(chain: bytes, event_hash: bytes) -> bytes:
    """One step of the global chain the relay keeps over every event in commit-safe order."""
    return hashlib.sha256(chain + event_hash).digest()


def micros(ts: datetime) -> int:
    """Microseconds since the epoch, exactly (no float rounding)."""
    delta = ts.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
