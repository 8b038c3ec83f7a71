"""The AsyncAPI 2.6 document of Hubbub's NATS subjects, built from the code so it cannot
drift: the event payloads' schemas come from the event Structs themselves (msgspec).

`python -m infra.asyncapi > docs/asyncapi.yaml` writes it; a test checks that the
committed file is what this module builds.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

import msgspec

from events.envelope import Envelope, Metadata
from events.registry import EVENT_TYPES, SCHEMA_VERSIONS
from infra.relay import HEADER_POSITION, HEADER_PREV

# Which stream each type is appended to: the category is the stream id's prefix.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "user": ("UserRegistered", "PasswordChanged", "RoleGranted", "RoleRevoked", "UserForgotten"),
    "username": ("UsernameClaimed",),
    "session": ("SessionStarted", "SessionRefreshed", "SessionRevoked"),
    "channel": (
        "ChannelCreated", "MemberJoined", "MemberInvited", "MemberLeft", "ChannelDeleted",
        "MessageSent", "MessageEdited", "MessageDeleted", "ReactionAdded", "ReactionRemoved",
        "MessagesRead", "MessagesDelivered",
    ),
    "channelname": ("ChannelNameClaimed", "ChannelNameReleased"),
    "dm": ("DirectChannelOpened",),
    "auction": (
        "AuctionOpened", "BidPlaced", "AuctionExtended", "AuctionBoughtNow", "AuctionCancelled",
        "AuctionClosed",
    ),
}  # fmt: skip

_REF = "#/components/schemas/{name}"

_PROSE = """\
Hubbub publishes every event of its event store on NATS JetStream, in commit-safe global
order, exactly as stored (PostgreSQL is the system of record; JetStream is the fast road
and keeps seven days). One relay publishes at a time; consumers read with durable pull
consumers and use `Hubbub-Prev` to tell a gap or a repeat from the next event, reading
PostgreSQL to fill a gap.

Every subject is preceded by `HUBBUB_NATS_SUBJECT_PREFIX` (empty by default; tests give
each run its own), and the JetStream stream is named by `HUBBUB_NATS_STREAM` (default
`HUBBUB_EVENTS`), holding `<prefix>events.>`.

`data` is the event as it was stored, at its `schema_version`; the schemas below are the
current versions. Older versions differ only as the evolution rules allow (fields added
since have defaults; a rename is a new type), and Hubbub's own readers upcast them.

Personal fields (usernames, display names, password hashes, message texts) travel sealed:
`sealed:v1:<user id>:<base64url(nonce + AES-256-GCM ciphertext)>`, opened only with that
user's key inside Hubbub. When a user is forgotten the key is destroyed and
`UserForgotten` is published; the sealed values stay, unreadable. The `username` guard
streams are named by a keyed hash of the username, never the name.

The WebSocket gateways also share two NATS core subjects (never JetStream, never stored):
presence and typing, below."""


def _prose(text: str) -> str:
    """One line a paragraph (docstrings and wrapped prose read badly in YAML otherwise)."""
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(text).split("\n\n"))


_DESCRIPTION = _prose(_PROSE)


def _event_message(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "title": name,
        "summary": f"The {name} event (schema version {SCHEMA_VERSIONS[name]}).",
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/EventHeaders"},
        "payload": {
            "allOf": [
                {"$ref": "#/components/schemas/Envelope"},
                {
                    "type": "object",
                    "properties": {
                        "type": {"const": name},
                        "data": {"$ref": _REF.format(name=name)},
                    },
                },
            ]
        },
    }


def _gateway_schemas() -> dict[str, Any]:
    user_ids = {"type": "array", "items": {"type": "string"}, "default": []}
    return {
        "PresenceNews": {
            "type": "object",
            "description": (
                "What one gateway tells the others about its signed-in users: changes as it"
                " sees them, and every second the whole list (a heartbeat, in parts of at"
                " most 2,000 users). A gateway not heard from for 4 s is presumed gone with"
                " all its users; `bye` says so at once."
            ),
            "properties": {
                "gateway": {"type": "string", "description": "the sending gateway's id"},
                "online": user_ids,
                "offline": user_ids,
                "beat": {
                    "type": "integer",
                    "default": 0,
                    "description": "> 0: part `part` of `parts` of heartbeat `beat`",
                },
                "part": {"type": "integer", "default": 0},
                "parts": {"type": "integer", "default": 0},
                "bye": {"type": "boolean", "default": False},
            },
            "required": ["gateway"],
        },
        "TypingNews": {
            "type": "object",
            "description": "A member is typing in a channel (at most once a second per connection).",
            "properties": {"channel_id": {"type": "string"}, "user_id": {"type": "string"}},
            "required": ["channel_id", "user_id"],
        },
    }


def document() -> dict[str, Any]:
    """The AsyncAPI document, as plain JSON data."""
    doc: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(_document()))
    return doc


def _document() -> dict[str, Any]:
    names = [n for category in CATEGORIES.values() for n in category]
    _, schemas = msgspec.json.schema_components(
        [EVENT_TYPES[n] for n in names] + [Envelope, Metadata], ref_template=_REF
    )
    for schema in schemas.values():
        if "description" in schema:
            schema["description"] = _prose(schema["description"])
    schemas["Envelope"]["properties"]["metadata"] = {"$ref": _REF.format(name="Metadata")}
    schemas["Envelope"]["properties"]["data"] = {
        "type": "object",
        "description": "the event's own fields, as stored, with `type` repeated",
    }
    schemas["EventHeaders"] = {
        "type": "object",
        "properties": {
            "Nats-Msg-Id": {"type": "string", "description": "the event_id: JetStream drops a "
                            "copy published again within five minutes"},
            HEADER_POSITION: {"type": "string", "description": "the event's position token"},
            HEADER_PREV: {"type": "string", "description": "the position token of the event "
                          "published just before it (all zeros before the first)"},
            "traceparent": {"type": "string", "description": "W3C trace context of the HTTP "
                            "request that caused the event, when it sent one"},
        },
        "required": ["Nats-Msg-Id", HEADER_POSITION, HEADER_PREV],
    }  # fmt: skip
    schemas.update(_gateway_schemas())
    return {
        "asyncapi": "2.6.0",
        "info": {"title": "Hubbub events on NATS", "version": "1.0.0", "description": _DESCRIPTION},
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "url": "nats://localhost:4222",
                "protocol": "nats",
                "description": "HUBBUB_NATS_URL (JetStream enabled)",
            }
        },
        "channels": {
            "events.{category}.{type}": {
                "description": "JetStream stream HUBBUB_EVENTS: every stored event, in "
                "commit-safe global order.",
                "parameters": {
                    "category": {
                        "description": "the stream id's prefix",
                        "schema": {"type": "string", "enum": list(CATEGORIES)},
                    },
                    "type": {
                        "description": "the event type",
                        "schema": {"type": "string", "enum": names},
                    },
                },
                "subscribe": {
                    "operationId": "receiveEvent",
                    "summary": "Events as the relay publishes them.",
                    "message": {"oneOf": [{"$ref": f"#/components/messages/{n}"} for n in names]},
                },
            },
            "gateway.presence": {
                "description": "NATS core: presence news between WebSocket gateways.",
                "publish": {
                    "operationId": "presenceNews",
                    "message": {"$ref": "#/components/messages/PresenceNews"},
                },
                "subscribe": {
                    "operationId": "receivePresenceNews",
                    "message": {"$ref": "#/components/messages/PresenceNews"},
                },
            },
            "gateway.typing": {
                "description": "NATS core: typing notices between WebSocket gateways.",
                "publish": {
                    "operationId": "typingNews",
                    "message": {"$ref": "#/components/messages/TypingNews"},
                },
                "subscribe": {
                    "operationId": "receiveTypingNews",
                    "message": {"$ref": "#/components/messages/TypingNews"},
                },
            },
        },
        "components": {
            "schemas": schemas,
            "messages": {
                **{n: _event_message(n) for n in names},
                "PresenceNews": {
                    "name": "PresenceNews",
                    "contentType": "application/json",
                    "payload": {"$ref": _REF.format(name="PresenceNews")},
                },
                "TypingNews": {
                    "name": "TypingNews",
                    "contentType": "application/json",
                    "payload": {"$ref": _REF.format(name="TypingNews")},
                },
            },
        },
    }


def main() -> None:
    """Write the document as YAML to stdout."""
    import yaml  # a dev dependency: only whoever regenerates the document needs it

    sys.stdout.write("# Generated by `python -m infra.asyncapi > docs/asyncapi.yaml`; edit that.\n")
    yaml.safe_dump(document(), sys.stdout, sort_keys=False, width=100, allow_unicode=True)


if __name__ == "__main__":
    main()
