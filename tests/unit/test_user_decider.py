"""The user decider (registration), as specifications."""

from __future__ import annotations

from datetime import UTC, datetime

from commands import user as u
from events.user import (
    UserForgotten,
    UsernameClaimed,
    UserRegistered,
    stream_of,
    user_stream,
    username_stream,
)
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
    pepper = b"p" * 32
    assert [stream_of(e, pepper) for e in (claimed, registered)] == [
        username_stream("ann", pepper),
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


def test_roles_are_granted_and_revoked_once() -> None:
    from events.user import RoleGranted, RoleRevoked

    roles = Decider(u.decide_role, u.evolve, u.INITIAL)
    grant = u.GrantRole(role="auditor", by="admin-1", at=T0)
    granted = RoleGranted(user_id="u1", role="auditor", granted_by="admin-1", granted_at=T0)
    roles.given(registered).when(grant).then(granted)
    roles.given(registered, granted).when(grant).then()  # already held: nothing to append
    revoke = u.RevokeRole(role="auditor", by="admin-1", at=T0)
    roles.given(registered, granted).when(revoke).then(
        RoleRevoked(user_id="u1", role="auditor", revoked_by="admin-1", revoked_at=T0)
    )
    roles.given(registered).when(revoke).then()
    roles.given(registered).when(u.GrantRole(role="root", by="admin-1", at=T0)).raises(
        u.UnknownRole
    )
    roles.given().when(grant).raises(u.NoSuchUser)


def test_a_user_is_forgotten_once_and_then_is_no_one() -> None:
    forget = u.ForgetUser(by="cli", at=T0)
    forgotten = UserForgotten(user_id="u1", forgotten_by="cli", forgotten_at=T0)
    erase = Decider(u.decide_forget, u.evolve, u.INITIAL)
    erase.given(registered).when(forget).then(forgotten)
    erase.given(registered, forgotten).when(forget).then()  # already: nothing to append
    erase.given().when(forget).raises(u.NoSuchUser)
    roles = Decider(u.decide_role, u.evolve, u.INITIAL)
    roles.given(registered, forgotten).when(u.GrantRole(role="admin", by="a", at=T0)).raises(
        u.NoSuchUser
    )
    password = Decider(u.decide_password, u.evolve, u.INITIAL)
    password.given(registered, forgotten).when(
        u.ChangePassword(password_hash="$argon2id$y", reason="changed", at=T0)
    ).raises(u.NoSuchUser)
    Decider(decide, u.evolve, u.INITIAL).given(registered, forgotten).when(register).raises(
        u.UserAlreadyExists
    )


def test_guard_streams_hide_the_username_behind_the_pepper() -> None:
    one, other = username_stream("ann", b"a" * 32), username_stream("ann", b"b" * 32)
    assert "ann" not in one and one != other
    assert len(one.removeprefix("username-")) == 64  # longer than any username: no clash
