"""Every event type, how to encode it for the store and decode (and upcast) it back.

Evolution rules (msgspec's schema-evolution chapter): a new field gets a default; a type
never changes; a rename is a new event type plus an upcaster. Stored events are never
rewritten: old payloads are upcast when read (their content hashes cover the stored
bytes, so the store, the relay and the audit export keep them exactly as written, with
their own `schema_version`; only `decode` sees the current form).

To evolve a type: add the field with a default, bump its entry in SCHEMA_VERSIONS, and
register an upcaster from the old version that says what the old events meant (the
default is what a writer that leaves the field out means, which need not be the same).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

import msgspec

from events.auction import (
    AuctionBoughtNow,
    AuctionCancelled,
    AuctionClosed,
    AuctionExtended,
    AuctionOpened,
    BidPlaced,
    minor_unit_digits,
)
from events.channel import (
    ChannelCreated,
    ChannelDeleted,
    ChannelNameClaimed,
    ChannelNameReleased,
    DirectChannelOpened,
    MemberInvited,
    MemberJoined,
    MemberLeft,
    MessageDeleted,
    MessageEdited,
    MessagesDelivered,
    MessageSent,
    MessagesRead,
    ReactionAdded,
    ReactionRemoved,
)
from events.session import SessionRefreshed, SessionRevoked, SessionStarted
from events.user import (
    PasswordChanged,
    RoleGranted,
    RoleRevoked,
    UserForgotten,
    UsernameClaimed,
    UserRegistered,
)

Event = (
    UsernameClaimed
    | UserRegistered
    | PasswordChanged
    | RoleGranted
    | RoleRevoked
    | UserForgotten
    | SessionStarted
    | SessionRefreshed
    | SessionRevoked
    | ChannelCreated
    | ChannelNameClaimed
    | ChannelNameReleased
    | DirectChannelOpened
    | MemberJoined
    | MemberInvited
    | MemberLeft
    | ChannelDeleted
    | MessageSent
    | MessageEdited
    | MessageDeleted
    | ReactionAdded
    | ReactionRemoved
    | MessagesRead
    | MessagesDelivered
    | AuctionOpened
    | BidPlaced
    | AuctionExtended
    | AuctionBoughtNow
    | AuctionCancelled
    | AuctionClosed
)
EVENT_TYPES: dict[str, type[msgspec.Struct]] = {cls.__name__: cls for cls in get_args(Event)}
# The schema version new events of each type are written with.
SCHEMA_VERSIONS: dict[str, int] = {**dict.fromkeys(EVENT_TYPES, 1), "AuctionOpened": 2}


def _auction_opened_v1_to_v2(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 1 had no `currency_digits`: it follows from the currency (JPY 0, EUR 2)."""
    return {**raw, "currency_digits": minor_unit_digits(raw["currency"])}


# (type, from_version) -> a function turning that version's JSON object into the next's.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("AuctionOpened", 1): _auction_opened_v1_to_v2,
}

_DECODER = msgspec.json.Decoder(Event)
_ENCODER = msgspec.json.Encoder()


class UnknownEventType(ValueError):
    """The log holds a type this code does not know (a newer writer, or a typo)."""


def encode(event: msgspec.Struct) -> tuple[str, int, bytes]:
    """(type, schema_version, JSON) of an event, ready for the store."""
    name = type(event).__name__
    return name, SCHEMA_VERSIONS[name], _ENCODER.encode(event)


def decode(type_name: str, schema_version: int, data: bytes) -> Event:
    """The current form of a stored event, upcasting older schema versions on the way."""
    current = SCHEMA_VERSIONS.get(type_name)
    if current is None or not 1 <= schema_version <= current:
        raise UnknownEventType(f"{type_name} version {schema_version}")
    if schema_version == current:
        event: Event = _DECODER.decode(data)
        return event
    raw: dict[str, Any] = msgspec.json.decode(data)
    for version in range(schema_version, current):
        raw = UPCASTERS[(type_name, version)](raw)
    raw["type"] = type_name
    upcast: Event = msgspec.convert(raw, Event)
    return upcast
