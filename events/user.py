"""What happens to accounts. Streams: `user-<user_id>`, and the guard stream
`username-<username>` that makes a username unique (its first event can be appended once)."""

from __future__ import annotations

from datetime import datetime
from typing import assert_never

import msgspec


class UsernameClaimed(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A username now belongs to a user; appended with the user's first event, atomically."""

    username: str
    user_id: str


class UserRegistered(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """An account was created. The password hash is argon2id; read models never copy it."""

    user_id: str
    username: str
    display_name: str
    password_hash: str
    registered_at: datetime


class PasswordChanged(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A new argon2id hash: the user changed the password, or the parameters changed."""

    user_id: str
    password_hash: str
    reason: str  # changed | rehash
    changed_at: datetime


class RoleGranted(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    user_id: str
    role: str  # admin | auditor | operator
    granted_by: str  # a user id, or "cli" for the bootstrap
    granted_at: datetime


class RoleRevoked(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    user_id: str
    role: str
    revoked_by: str
    revoked_at: datetime


UserEvent = UsernameClaimed | UserRegistered | PasswordChanged | RoleGranted | RoleRevoked


def user_stream(user_id: str) -> str:
    return f"user-{user_id}"


def username_stream(username: str) -> str:
    return f"username-{username}"


def stream_of(event: UserEvent) -> str:
    """The stream an event belongs to."""
    match event:
        case UsernameClaimed():
            return username_stream(event.username)
        case UserRegistered() | PasswordChanged() | RoleGranted() | RoleRevoked():
            return user_stream(event.user_id)
        case _:
            assert_never(event)
