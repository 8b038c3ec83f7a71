"""Domain events written straight to the store, for tests that need a log to work on."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from events.envelope import GENESIS_HASH, chain_hash, content_digest, micros
from events.registry import encode
from events.user import UserRegistered, user_stream
from infra.store import NO_STREAM, EventStore, NewEvent, RecordedEvent, StreamAppend


def new_event(event: object) -> NewEvent:
    """A domain event, encoded for the store with a fresh id."""
    type_name, version, data = encode(event)  # type: ignore[arg-type]
    return NewEvent(
        event_id=uuid.uuid4(),
        type=type_name,
        data=data,
        metadata=b'{"correlation_id":"test"}',
        schema_version=version,
    )


def user_registered(user_id: str, *, password_hash: str = "-") -> UserRegistered:
    return UserRegistered(
        user_id=user_id, username=f"u{user_id.replace('-', '')[:20]}", display_name="x",
        password_hash=password_hash, registered_at=datetime.now(UTC),
    )  # fmt: skip


async def register_users(store: EventStore, n: int) -> list[str]:
    """Append `n` UserRegistered events, each on its own new user stream; their ids."""
    ids = []
    for _ in range(n):
        uid = str(uuid.uuid4())
        await store.append(
            [StreamAppend(user_stream(uid), NO_STREAM, [new_event(user_registered(uid))])]
        )
        ids.append(uid)
    return ids


def verify_chain(events: list[RecordedEvent]) -> None:
    """A whole stream, read back: versions 1..n, each event chained to the one before as
    events.envelope.chain_hash chains them, from the genesis hash."""
    prev = GENESIS_HASH
    for version, e in enumerate(events, start=1):
        assert e.stream_version == version
        assert e.prev_hash == prev
        digest = content_digest(
            e.event_id, e.stream_id, e.type, e.schema_version, e.data, e.metadata
        )
        assert chain_hash(prev, e.stream_version, micros(e.recorded_at), digest) == e.hash
        prev = e.hash
