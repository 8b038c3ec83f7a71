"""Operator actions that go around HTTP (the CLI's `hubbub users grant-role|forget`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from commands import user as users
from events.envelope import Position
from events.personal import ERASED
from events.user import user_stream
from infra.store import EventStore, StreamAppend
from infra.vault import Vault
from write_api.handling import load, metadata, new_events, retrying, user_id_of
from write_api.throttle import LoginThrottle


class UnknownUser(LookupError):
    """No user has that username (or id)."""


async def grant_role(store: EventStore, vault: Vault, username: str, role: str) -> Position | None:
    """Grant `role` to the user called `username` (the first admin comes this way);
    None when the user already had it. UnknownUser, users.UnknownRole on bad input."""
    user_id = await user_id_of(store, vault, username)
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


@dataclass(frozen=True)
class Forgetting:
    """What `forget_user` did: whose key it destroyed (False: it was gone already) and where
    UserForgotten was recorded (None: it already was)."""

    user_id: str
    key_destroyed: bool
    position: Position | None


async def forget_user(store: EventStore, vault: Vault, who: str) -> Forgetting:
    """Erase a user, named by username or id: destroy their key (crypto-shredding: what was
    sealed with it is unreadable from now on, and the log's hashes still hold), then record
    UserForgotten so read models drop what they copied and their sessions end. Running it
    again finishes a forgetting that was interrupted. UnknownUser when there is no such user."""
    try:
        user_id: str | None = str(UUID(who))
    except ValueError:
        user_id = await user_id_of(store, vault, who)
    if user_id is None:
        raise UnknownUser(who)
    stream = user_stream(user_id)
    state, _ = await load(store, stream, users.INITIAL, users.evolve)
    if isinstance(state, users.NoUser):
        raise UnknownUser(who)
    if isinstance(state, users.Registered):  # while the key lives: the name, to clear it
        name = await vault.reveal(state.username)
        if name != ERASED:  # its failed-login count is a row keyed by the name
            await LoginThrottle(store.pool).succeeded(name)
    destroyed = await vault.forget(user_id)  # first: the part that must never be skipped

    async def once() -> Position | None:
        state, version = await load(store, stream, users.INITIAL, users.evolve)
        decided = users.decide_forget(users.ForgetUser(by="cli", at=datetime.now(UTC)), state)
        if not decided:
            return None
        meta = metadata(None, "cli-forget-user", None, None)
        result = await store.append([StreamAppend(stream, version, new_events(decided, meta))])
        return result.position

    return Forgetting(user_id, destroyed, await retrying(once, busy="the user's stream"))
