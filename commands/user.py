"""The user decider: registration. Pure: time, ids and the password hash arrive in the
command."""

from __future__ import annotations

from datetime import datetime
from typing import assert_never

import msgspec

from commands.errors import DomainError
from events.user import (
    PasswordChanged,
    RoleGranted,
    RoleRevoked,
    UserEvent,
    UserForgotten,
    UsernameClaimed,
    UserRegistered,
)


class UsernameTaken(DomainError):
    code = "username_taken"
    status = 409


class UserAlreadyExists(DomainError):
    code = "user_exists"
    status = 409


class RegisterUser(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    username: str
    display_name: str
    password_hash: str
    at: datetime


class NoUser(msgspec.Struct, frozen=True):
    pass


class Registered(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    username: str
    display_name: str
    password_hash: str
    roles: frozenset[str] = frozenset()


class Forgotten(msgspec.Struct, frozen=True, kw_only=True):
    """An erased user: the id stays taken, nothing else about them is known or allowed."""

    user_id: str


UserState = NoUser | Registered | Forgotten
INITIAL: UserState = NoUser()


def evolve(state: UserState, event: UserEvent) -> UserState:
    """Fold one event into the user's state; never fails."""
    match event:
        case UserRegistered():
            return Registered(
                user_id=event.user_id,
                username=event.username,
                display_name=event.display_name,
                password_hash=event.password_hash,
            )
        case UserForgotten():
            return Forgotten(user_id=event.user_id)
        case PasswordChanged():
            if isinstance(state, Registered):
                return msgspec.structs.replace(state, password_hash=event.password_hash)
            return state
        case RoleGranted():
            if isinstance(state, Registered):
                return msgspec.structs.replace(state, roles=state.roles | {event.role})
            return state
        case RoleRevoked():
            if isinstance(state, Registered):
                return msgspec.structs.replace(state, roles=state.roles - {event.role})
            return state
        case UsernameClaimed():
            return state
        case _:
            assert_never(event)


class Registration(msgspec.Struct, frozen=True, kw_only=True):
    """What registration decides over: the user's state and whether its username is taken."""

    user: UserState
    username_claimed: bool


class ChangePassword(msgspec.Struct, frozen=True, kw_only=True):
    password_hash: str
    reason: str
    at: datetime


class NoSuchUser(DomainError):
    code = "user_not_found"
    status = 404


def decide_password(command: ChangePassword, state: UserState) -> list[UserEvent]:
    """A new password hash for an existing user."""
    match state:
        case Registered():
            return [PasswordChanged(user_id=state.user_id, password_hash=command.password_hash,
                                    reason=command.reason, changed_at=command.at)]  # fmt: skip
        case NoUser() | Forgotten():
            raise NoSuchUser("no such user")
        case _:
            assert_never(state)


class ForgetUser(msgspec.Struct, frozen=True, kw_only=True):
    by: str
    at: datetime


def decide_forget(command: ForgetUser, state: UserState) -> list[UserEvent]:
    """Erase a user; forgetting a forgotten user appends nothing."""
    match state:
        case Registered():
            return [UserForgotten(user_id=state.user_id, forgotten_by=command.by,
                                  forgotten_at=command.at)]  # fmt: skip
        case Forgotten():
            return []
        case NoUser():
            raise NoSuchUser("no such user")
        case _:
            assert_never(state)


ROLES = frozenset({"admin", "auditor", "operator"})


class UnknownRole(DomainError):
    code = "unknown_role"
    status = 422


class GrantRole(msgspec.Struct, frozen=True, kw_only=True):
    role: str
    by: str
    at: datetime


class RevokeRole(msgspec.Struct, frozen=True, kw_only=True):
    role: str
    by: str
    at: datetime


def decide_role(command: GrantRole | RevokeRole, state: UserState) -> list[UserEvent]:
    """Grant or revoke a role; doing what is already done appends nothing."""
    if command.role not in ROLES:
        raise UnknownRole(f"no role {command.role!r}; roles are {', '.join(sorted(ROLES))}")
    match state:
        case NoUser() | Forgotten():
            raise NoSuchUser("no such user")
        case Registered():
            pass
        case _:
            assert_never(state)
    match command:
        case GrantRole():
            if command.role in state.roles:
                return []
            return [RoleGranted(user_id=state.user_id, role=command.role, granted_by=command.by,
                                granted_at=command.at)]  # fmt: skip
        case RevokeRole():
            if command.role not in state.roles:
                return []
            return [RoleRevoked(user_id=state.user_id, role=command.role, revoked_by=command.by,
                                revoked_at=command.at)]  # fmt: skip
        case _:
            assert_never(command)


def decide(command: RegisterUser, state: Registration) -> list[UserEvent]:
    """Register a user: the username must be free and the id unused."""
    if state.username_claimed:
        raise UsernameTaken(f"username {command.username!r} is taken")
    match state.user:
        case Registered() | Forgotten():
            raise UserAlreadyExists(f"user {command.user_id} exists")
        case NoUser():
            pass
        case _:
            assert_never(state.user)
    return [
        UsernameClaimed(username=command.username, user_id=command.user_id),
        UserRegistered(
            user_id=command.user_id,
            username=command.username,
            display_name=command.display_name,
            password_hash=command.password_hash,
            registered_at=command.at,
        ),
    ]
