"""What happens to sign-in sessions. Stream: `session-<session_id>`.

A refresh token is `<session_id>.<secret>`; only SHA-256 of the secret is ever stored.
Every refresh spends the current secret and records the next one's hash.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class SessionStarted(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    session_id: str
    user_id: str
    refresh_hash: str  # hex SHA-256 of the refresh token's secret
    started_at: datetime
    expires_at: datetime


class SessionRefreshed(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    session_id: str
    refresh_hash: str  # the next secret's hash; the previous one is now spent
    refreshed_at: datetime


class SessionRevoked(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    session_id: str
    user_id: str
    reason: str  # logout | refresh_token_reused | password_changed
    revoked_at: datetime


SessionEvent = SessionStarted | SessionRefreshed | SessionRevoked


def session_stream(session_id: str) -> str:
    return f"session-{session_id}"
