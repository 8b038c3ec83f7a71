"""Events shaped like Hubbub's busiest ones (a chat message: ~230 bytes of data, ~150 of
metadata), built before the clock starts so workloads time the store, not the caller."""

from __future__ import annotations

from uuid import UUID

from uuid_utils.compat import uuid7

from events.envelope import ENCODER
from infra.store import NewEvent

MESSAGE_TEXT = (
    "Anyone up for the vintage synth auction at noon? The Juno-106 looks mint, bids open low."
)


def channel_stream() -> str:
    """A fresh `channel-<uuid7>` stream id."""
    return f"channel-{uuid7()}"


def message(channel: str, author: UUID | None = None) -> NewEvent:
    """A `MessagePosted`-like event with a fresh UUIDv7 id."""
    event_id = uuid7()
    author_id = str(author or uuid7())
    data = ENCODER.encode(
        {
            "message_id": str(event_id),
            "channel_id": channel,
            "author_id": author_id,
            "seq": 1,
            "text": MESSAGE_TEXT,
        }
    )
    metadata = ENCODER.encode(
        {"actor_id": author_id, "correlation_id": str(uuid7()), "causation_id": str(uuid7())}
    )
    return NewEvent(event_id=event_id, type="MessagePosted", data=data, metadata=metadata)


def messages(channel: str, n: int) -> list[NewEvent]:
    """`n` message events for one channel stream."""
    author = uuid7()
    return [message(channel, author) for _ in range(n)]
