"""The user decider (registration), as specifications."""

from __future__ import annotations

from datetime import UTC, datetime

from commands import user as u
from events.user import UsernameClaimed, UserRegistered, stream_of, user_stream, username_stream
from tests.spec import Decider

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
register = u.RegisterUser(
    user_id="u1", username="ann", display_name="Ann", password_hash="$argon2id$x", at=T0
)
claimed = UsernameClaimed(username="ann", user_id="u1")
registered = UserRegistered(
    user_id="u1", username="ann", display_name="Ann", password_hash="$argon2id$x", registered_at=T0
)


def decide(command: u.RegisterUser, state: u.UserState) -> list[u.UserEvent]:
    return u.decide(command, u.Registration(user=state, username_claimed=False))


def test_registration_claims_the_username_and_creates_the_user() -> None:
    Decider(decide, u.evolve, u.INITIAL).given().when(register).then(claimed, registered)
    assert [stream_of(e) for e in (claimed, registered)] == [
        username_stream("ann"),
        user_stream("u1"),
    ]


def test_a_taken_username_is_refused() -> None:
    taken = Decider(
        lambda c, st: u.decide(c, u.Registration(user=st, username_claimed=True)),
        u.evolve,
        u.INITIAL,
    )
    taken.given().when(register).raises(u.UsernameTaken)


def test_an_existing_user_id_is_refused() -> None:
    Decider(decide, u.evolve, u.INITIAL).given(registered).when(register).raises(
        u.UserAlreadyExists
    )
