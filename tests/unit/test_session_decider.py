"""The session decider, as specifications."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from commands import session as s
from events.session import SessionRefreshed, SessionRevoked, SessionStarted
from tests.spec import Decider

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=5)
END = T0 + timedelta(days=30)
sessions = Decider(s.decide, s.evolve, s.INITIAL)
started = SessionStarted(
    session_id="s1", user_id="u1", refresh_hash="h1", started_at=T0, expires_at=END
)
refreshed = SessionRefreshed(session_id="s1", refresh_hash="h2", refreshed_at=LATER)


def start() -> s.StartSession:
    return s.StartSession(session_id="s1", user_id="u1", refresh_hash="h1", at=T0, expires_at=END)


def test_a_session_starts_once() -> None:
    sessions.given().when(start()).then(started)
    sessions.given(started).when(start()).raises(s.SessionExists)


def test_refresh_spends_the_current_token_for_the_next() -> None:
    sessions.given(started).when(
        s.RefreshSession(presented_hash="h1", next_hash="h2", at=LATER)
    ).then(refreshed)
    sessions.given(started, refreshed).when(
        s.RefreshSession(presented_hash="h2", next_hash="h3", at=LATER)
    ).then(SessionRefreshed(session_id="s1", refresh_hash="h3", refreshed_at=LATER))


def test_presenting_a_spent_token_revokes_the_session() -> None:
    sessions.given(started, refreshed).when(
        s.RefreshSession(presented_hash="h1", next_hash="h9", at=LATER)
    ).then(SessionRevoked(session_id="s1", user_id="u1", reason=s.REUSED, revoked_at=LATER))


def test_unknown_expired_or_revoked_tokens_refresh_nothing() -> None:
    sessions.given(started).when(
        s.RefreshSession(presented_hash="guess", next_hash="h2", at=LATER)
    ).raises(s.InvalidRefreshToken)
    sessions.given(started).when(
        s.RefreshSession(presented_hash="h1", next_hash="h2", at=END)
    ).raises(s.InvalidRefreshToken)
    sessions.given().when(s.RefreshSession(presented_hash="h1", next_hash="h2", at=LATER)).raises(
        s.InvalidRefreshToken
    )
    revoked = SessionRevoked(session_id="s1", user_id="u1", reason="logout", revoked_at=LATER)
    sessions.given(started, revoked).when(
        s.RefreshSession(presented_hash="h1", next_hash="h2", at=LATER)
    ).raises(s.InvalidRefreshToken)


def test_revoking_is_idempotent() -> None:
    revoked = SessionRevoked(session_id="s1", user_id="u1", reason="logout", revoked_at=LATER)
    sessions.given(started).when(s.RevokeSession(reason="logout", at=LATER)).then(revoked)
    sessions.given(started, revoked).when(s.RevokeSession(reason="logout", at=LATER)).then()
    sessions.given().when(s.RevokeSession(reason="logout", at=LATER)).then()
