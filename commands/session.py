"""The session decider: start, refresh (rotating the refresh token), revoke.

Pure: the time, the new session id and the refresh tokens' hashes arrive in commands.
"""

from __future__ import annotations

from datetime import datetime
from typing import assert_never

import msgspec

from commands.errors import DomainError
from events.session import SessionEvent, SessionRefreshed, SessionRevoked, SessionStarted


class InvalidRefreshToken(DomainError):
    code = "invalid_refresh_token"
    status = 401


class RefreshTokenReused(DomainError):
    code = "refresh_token_reused"
    status = 401


REUSED = "refresh_token_reused"


class StartSession(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    user_id: str
    refresh_hash: str
    at: datetime
    expires_at: datetime


class RefreshSession(msgspec.Struct, frozen=True, kw_only=True):
    presented_hash: str
    next_hash: str
    at: datetime


class RevokeSession(msgspec.Struct, frozen=True, kw_only=True):
    reason: str
    at: datetime


class NoSession(msgspec.Struct, frozen=True):
    pass


class Active(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    user_id: str
    current_hash: str
    spent: frozenset[str]
    expires_at: datetime


class Revoked(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    user_id: str
    reason: str


SessionState = NoSession | Active | Revoked
SessionCommand = StartSession | RefreshSession | RevokeSession
INITIAL: SessionState = NoSession()


class SessionExists(DomainError):
    code = "session_exists"
    status = 409


def decide(command: SessionCommand, state: SessionState) -> list[SessionEvent]:
    """Every rule about sessions."""
    match command:
        case StartSession():
            if not isinstance(state, NoSession):
                raise SessionExists(f"session {command.session_id} exists")
            return [
                SessionStarted(
                    session_id=command.session_id, user_id=command.user_id,
                    refresh_hash=command.refresh_hash, started_at=command.at,
                    expires_at=command.expires_at,
                )
            ]  # fmt: skip
        case RefreshSession():
            return _refresh(command, state)
        case RevokeSession():
            match state:
                case Active():
                    return [SessionRevoked(session_id=state.session_id, user_id=state.user_id,
                                           reason=command.reason, revoked_at=command.at)]  # fmt: skip
                case Revoked() | NoSession():
                    return []  # revoking twice, or nothing, changes nothing
                case _:
                    assert_never(state)
        case _:
            assert_never(command)


def _refresh(command: RefreshSession, state: SessionState) -> list[SessionEvent]:
    match state:
        case NoSession() | Revoked():
            raise InvalidRefreshToken("the session is not active")
        case Active():
            if command.presented_hash in state.spent:
                # Someone holds an old token: the thief or the owner, we cannot tell which.
                # End the session for both (the caller answers refresh_token_reused).
                return [SessionRevoked(session_id=state.session_id, user_id=state.user_id,
                                       reason=REUSED, revoked_at=command.at)]  # fmt: skip
            if command.presented_hash != state.current_hash:
                raise InvalidRefreshToken("unknown refresh token")
            if command.at >= state.expires_at:
                raise InvalidRefreshToken("the session has expired")
            return [SessionRefreshed(session_id=state.session_id, refresh_hash=command.next_hash,
                                     refreshed_at=command.at)]  # fmt: skip
        case _:
            assert_never(state)


def evolve(state: SessionState, event: SessionEvent) -> SessionState:
    """Fold one event into the session's state; never fails."""
    match event:
        case SessionStarted():
            return Active(session_id=event.session_id, user_id=event.user_id,
                          current_hash=event.refresh_hash, spent=frozenset(),
                          expires_at=event.expires_at)  # fmt: skip
        case SessionRefreshed():
            if isinstance(state, Active):
                return Active(session_id=state.session_id, user_id=state.user_id,
                              current_hash=event.refresh_hash,
                              spent=state.spent | {state.current_hash},
                              expires_at=state.expires_at)  # fmt: skip
            return state
        case SessionRevoked():
            return Revoked(session_id=event.session_id, user_id=event.user_id, reason=event.reason)
        case _:
            assert_never(event)
