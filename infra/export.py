"""The audit export: the log, or the part of it a query selects, as JSON lines in
commit-safe order, one chunk per batch read, so that a million events never sit in memory
at once. `GET /v1/audit/events` and `hubbub audit replay` both stream what `export` yields.

Two formats, one line per event:
- `ndjson`: the contract's envelope (as `RecordedEvent.envelope()` gives it).
- `cloudevents`: a CloudEvents 1.0 event in structured JSON mode, one to one with the
  envelope (see `CloudEvent`), so the envelope, and its hashes, can be rebuilt from it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final
from urllib.parse import quote

import msgspec

from events.envelope import ENCODER, ORIGIN, Envelope, Position
from infra.query import Collector
from infra.store import EVERYTHING, EventStore, Selection, batches_read_ahead

BATCH: Final = 5000
FORMATS: Final = ("ndjson", "cloudevents")
MAX_TYPES: Final = 100
_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,99}$")
_URI_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")


class CloudEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An event as CloudEvents 1.0 JSON. Envelope field -> attribute:

    event_id -> id; type -> type; recorded_at -> time; data -> data (datacontenttype
    application/json); stream_id -> source `hubbub/<stream_id>` (percent-encoded) and the
    extension `streamid`; stream_version -> `streamversion`; position -> `position`;
    schema_version -> `schemaversion`; metadata -> `metadata`, the JSON object as a string
    exactly as stored (extension values cannot be objects, and the hash covers its bytes);
    prev_hash -> `prevhash`; hash -> `hash`. Extension names are lower-case letters and
    digits only, as the specification requires.
    """

    specversion: str
    id: str
    source: str
    type: str
    time: datetime
    datacontenttype: str
    data: msgspec.Raw
    streamid: str
    streamversion: int
    position: str
    schemaversion: int
    metadata: str
    prevhash: str
    hash: str

    @classmethod
    def of(cls, envelope: Envelope) -> CloudEvent:
        """The CloudEvent of an envelope."""
        stream = envelope.stream_id
        return cls(
            specversion="1.0",
            id=envelope.event_id,
            source="hubbub/" + (stream if _URI_SAFE.match(stream) else quote(stream, safe="")),
            type=envelope.type,
            time=envelope.recorded_at,
            datacontenttype="application/json",
            data=envelope.data,
            streamid=stream,
            streamversion=envelope.stream_version,
            position=envelope.position,
            schemaversion=envelope.schema_version,
            metadata=bytes(envelope.metadata).decode(),
            prevhash=envelope.prev_hash,
            hash=envelope.hash,
        )


def _ndjson(envelopes: Sequence[Envelope]) -> bytes:
    return ENCODER.encode_lines(envelopes)


def _cloudevents(envelopes: Sequence[Envelope]) -> bytes:
    return ENCODER.encode_lines([CloudEvent.of(e) for e in envelopes])


_ENCODE: Final[dict[str, Callable[[Sequence[Envelope]], bytes]]] = {
    "ndjson": _ndjson,
    "cloudevents": _cloudevents,
}


@dataclass(frozen=True, kw_only=True)
class ExportQuery:
    """What to export: the events after `after` that `where` selects, at most `limit`."""

    after: Position = ORIGIN
    where: Selection = EVERYTHING
    limit: int | None = None
    format: str = "ndjson"

    @classmethod
    def parse(
        cls,
        *,
        after: str | None = None,
        stream_id: str | None = None,
        types: Sequence[str] = (),
        since: str | None = None,
        until: str | None = None,
        limit: str | None = None,
        format: str | None = None,
    ) -> ExportQuery:
        """From the raw parameters; each type may be a comma-separated list. Raises
        InvalidQuery naming every bad parameter."""
        errors = Collector()
        start = errors.position("after", after) or ORIGIN
        if stream_id is not None and not 1 <= len(stream_id) <= 300:
            errors.add("stream_id", "must be 1..300 characters")
        wanted = tuple(dict.fromkeys(t.strip() for raw in types for t in raw.split(",")))
        if any(not _TYPE.match(t) for t in wanted):
            errors.add("type", "event types are names such as MessageSent, comma-separated")
        elif len(wanted) > MAX_TYPES:
            errors.add("type", f"at most {MAX_TYPES} types")
        first, end = errors.time("since", since), errors.time("until", until)
        if first is not None and end is not None and first >= end:
            errors.add("until", "must be later than since")
        count = None
        if limit is not None:
            if limit.isascii() and limit.isdigit() and int(limit) >= 1:
                count = int(limit)
            else:
                errors.add("limit", "must be a positive integer")
        if format is not None and format not in FORMATS:
            errors.add("format", f"must be one of {', '.join(FORMATS)}")
        errors.check()
        where = Selection(stream_id=stream_id, types=wanted, since=first, until=end)
        return cls(after=start, where=where, limit=count, format=format or "ndjson")


async def export(
    store: EventStore, query: ExportQuery, *, batch: int = BATCH
) -> AsyncGenerator[bytes, None]:
    """The export's chunks, each the encoded lines of one batch.

    Reads the head of the log first and stops there, so an export ends even while events
    keep arriving, and a database that cannot be reached fails this call rather than the
    stream half-way. Awaited: `chunks = await export(store, query)`.
    """
    where = replace(query.where, upto=await store.head())
    return _chunks(store, query, where, batch)


async def _chunks(
    store: EventStore, query: ExportQuery, where: Selection, batch: int
) -> AsyncGenerator[bytes, None]:
    encode = _ENCODE[query.format]
    remaining = query.limit
    size = batch if remaining is None else min(batch, remaining)

    def read(after: Position) -> Awaitable[list[Envelope]]:
        return store.read_envelopes(after, limit=size, where=where)

    batches = batches_read_ahead(read, query.after, at=lambda envelope: envelope.at)
    async with contextlib.aclosing(batches):
        async for envelopes in batches:
            if remaining is not None:
                envelopes = envelopes[:remaining]
                remaining -= len(envelopes)
            yield encode(envelopes)
            if remaining == 0:
                return
