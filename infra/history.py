"""Time travel: an aggregate's state as of a position or a time, folded from its stream
with its decider's own `evolve`.

The deciders live in `commands/`, which the read side may not import: the bootstrap
(`infra/bootstrap.py`) hands each stream category's `Aggregate` in. A state is rendered
as plain JSON by its view, never with a password or refresh-token hash in it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgspec

from events.envelope import Position, category_of
from events.registry import decode
from infra.query import Collector
from infra.store import EventStore, RecordedEvent
from infra.vault import open_envelopes

REDACTED: Final = "[redacted]"
SECRET_MARKERS: Final = ("password_hash", "refresh_hash")


def _builtin(value: Any) -> Any:
    # pyrsistent's PMap and PSet are Mappings and Sets: the channel state is made of them.
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Set):
        return set(value)
    raise NotImplementedError(f"cannot render {type(value).__name__}")


def _redact(value: Any, hide: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {
            key: (REDACTED if item is not None else None)
            if key in hide or any(marker in key for marker in SECRET_MARKERS)
            else _redact(item, hide)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact(item, hide) for item in value]
    return value


def plain(state: Any, *, hide: frozenset[str] = frozenset()) -> Any:
    """A state as JSON-ready builtins: a Struct becomes an object led by its `type` (which
    variant of the state union it is), persistent maps objects, sets sorted lists. Fields
    named like *password_hash* or *refresh_hash*, or in `hide`, are redacted."""
    body = msgspec.to_builtins(state, enc_hook=_builtin, order="deterministic")
    if isinstance(state, msgspec.Struct) and isinstance(body, dict):
        body = {"type": type(state).__name__, **body}
    return _redact(body, hide)


@dataclass(frozen=True)
class Aggregate:
    """How a stream category folds: its decider's initial state and evolve, and the view
    that renders a state as JSON without secrets."""

    initial: Any
    evolve: Callable[[Any, Any], Any]
    view: Callable[[Any], Any] = plain


@dataclass(frozen=True)
class AsOf:
    """Where a fold stops: after the last event at or before `position`, or recorded at or
    before `time`; neither: now."""

    position: Position | None = None
    time: datetime | None = None

    @classmethod
    def parse(cls, at_position: str | None, at_time: str | None) -> AsOf:
        """From the raw parameters; InvalidQuery when bad or both given."""
        errors = Collector()
        if at_position is not None and at_time is not None:
            errors.add("at_time", "give at_position or at_time, not both")
        position, time = (
            errors.position("at_position", at_position),
            errors.time("at_time", at_time),
        )
        errors.check()
        return cls(position, time)

    def includes(self, event: RecordedEvent) -> bool:
        if self.position is not None:
            return event.at <= self.position
        if self.time is not None:
            return event.recorded_at <= self.time
        return True


class UnknownStream(LookupError):
    """The stream has no events."""


class NoStateModel(LookupError):
    """No decider folds streams of this category."""


class StateAt(msgspec.Struct, frozen=True, kw_only=True):
    """A stream's state as of a point: the last event folded (version 0 and no position:
    the stream had no event yet) and the state, rendered."""

    stream_id: str
    version: int
    position: str | None
    recorded_at: datetime | None
    state: Any


async def state_at(
    store: EventStore, aggregates: Mapping[str, Aggregate], stream_id: str, as_of: AsOf
) -> StateAt:
    """Fold the stream's events up to `as_of`. The stream's version order is its commit
    order, so the fold stops at the first event past the point: what follows came later.
    Raises NoStateModel or UnknownStream."""
    aggregate = aggregates.get(category_of(stream_id))
    if aggregate is None:
        known = ", ".join(sorted(aggregates))
        raise NoStateModel(f"no decider folds {category_of(stream_id)!r} streams (known: {known})")
    state, last, seen = aggregate.initial, None, False
    async for events in store.iter_stream(stream_id):
        seen = True
        async with store.pool.connection() as conn:  # personal fields, opened while keys live
            opened = await open_envelopes(conn, [e.envelope() for e in events])
        for event, envelope in zip(events, opened, strict=True):
            if not as_of.includes(event):
                return _state(stream_id, last, aggregate.view(state))
            state = aggregate.evolve(
                state, decode(envelope.type, envelope.schema_version, envelope.data)
            )
            last = event
    if not seen:
        raise UnknownStream(f"stream {stream_id} has no events")
    return _state(stream_id, last, aggregate.view(state))


def _state(stream_id: str, last: RecordedEvent | None, state: Any) -> StateAt:
    return StateAt(
        stream_id=stream_id,
        version=last.stream_version if last else 0,
        position=last.at.token() if last else None,
        recorded_at=last.recorded_at if last else None,
        state=state,
    )
