"""Operator actions that go around HTTP (the CLI's `hubbub users grant-role`)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from commands import user as users
from events.envelope import Position
from events.user import user_stream, username_stream
from infra.store import ConcurrencyError, EventStore, StreamAppend
from write_api.handling import MAX_ATTEMPTS, load, metadata, new_events


class UnknownUser(LookupError):
    """No user has that username."""


async def grant_role(store: EventStore, username: str, role: str) -> Position | None:
    """Grant `role` to the user called `username` (the first admin comes this way);
    None when the user already had it. UnknownUser, users.UnknownRole on bad input."""
    guard = await store.read_stream(username_stream(username), limit=1)
    if not guard:
        raise UnknownUser(username)
    user_id = msgspec.json.decode(guard[0].data)["user_id"]
    stream = user_stream(user_id)
    for _ in range(MAX_ATTEMPTS):
        state, version = await load(store, stream, users.INITIAL, users.evolve)
        decided = users.decide_role(
            users.GrantRole(role=role, by="cli", at=datetime.now(UTC)), state
        )
        if not decided:
            return None
        meta = metadata(None, "cli-grant-role", None, None)
        try:
            result = await store.append([StreamAppend(stream, version, new_events(decided, meta))])
        except ConcurrencyError:
            continue
        return result.position
    raise RuntimeError("the user's stream is too busy; try again")
