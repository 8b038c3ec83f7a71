"""What happens to accounts. Streams: `user-<user_id>`, and the guard stream
`username-<keyed hash of the username>` that makes a username unique (its first event can
be appended once).

Usernames, display names and password hashes are personal data: writers store them sealed
with the user's key (infra/vault.py), and `UserForgotten` records that the key was
destroyed. The guard stream's id is a keyed hash rather than the name itself because a
stream id can never be sealed or erased; the name stays reserved, unreadable."""

from __future__ import annotations

import hashlib
import hmac
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


class UserForgotten(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The user's personal data was erased: their key is destroyed, so what was sealed with
    it can no longer be read, and read models drop what they copied."""

    user_id: str
    forgotten_by: str  # a user id, or "cli"
    forgotten_at: datetime


UserEvent = (
    UsernameClaimed | UserRegistered | PasswordChanged | RoleGranted | RoleRevoked | UserForgotten
)


def user_stream(user_id: str) -> str:
    return f"user-{user_id}"


def username_stream(username: str, pepper: bytes) -> str:
    """The guard stream of a username: HMAC-SHA256 under the installation's pepper, so the
    log never holds the name (64 hex digits, longer than any username can be)."""
    digest = hmac.new(pepper, username.encode(), hashlib.sha256).hexdigest()
    return f"username-{digest}"


def legacy_username_stream(username: str) -> str:
    """The guard stream logs written before keyed guards used: the name in clear. Still
    read, so that a name claimed then stays taken; never written."""
    return f"username-{username}"


def stream_of(event: UserEvent, pepper: bytes) -> str:
    """The stream an event belongs to (a claim's name must still be in clear here)."""
    match event:
        case UsernameClaimed():
            return username_stream(event.username, pepper)
        case UserRegistered() | PasswordChanged() | RoleGranted() | RoleRevoked() | UserForgotten():
            return user_stream(event.user_id)
        case _:
            assert_never(event)
