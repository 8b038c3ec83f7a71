"""Operator actions that go around HTTP (the CLI's `hubbub users grant-role`)."""

from __future__ import annotations

from datetime import UTC, datetime

from commands import user as users
from events.envelope import Position
from events.user import user_stream
from infra.store import EventStore, StreamAppend
from write_api.handling import load, metadata, new_events, retrying, user_id_of


class UnknownUser(LookupError):
    """No user has that username."""


async def grant_role(store: EventStore, username: str, role: str) -> Position | None:
    """Grant `role` to the user called `username` (the first admin comes this way);
    None when the user already had it. UnknownUser, users.UnknownRole on bad input."""
    user_id = await user_id_of(store, username)
    if user_id is None:
        raise UnknownUser(username)
    stream = user_stream(user_id)

    async def once() -> Position | None:
        state, version = await load(store, stream, users.INITIAL, users.evolve)
        decided = users.decide_role(
            users.GrantRole(role=role, by="cli", at=datetime.now(UTC)), state
        )
        if not decided:
            return None
        meta = metadata(None, "cli-grant-role", None, None)
        result = await store.append([StreamAppend(stream, version, new_events(decided, meta))])
        return result.position

    return await retrying(once, busy="the user's stream")
