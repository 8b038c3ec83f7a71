"""Sign-in sessions: login, refresh (rotating the refresh token), logout.

Refresh tokens are `<session_id>.<secret>`; only SHA-256 of the secret is stored. Login and
refresh answer with secrets, so their responses are never stored for Idempotency-Key
replay (that would keep tokens in the database); a retried login simply signs in again.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody
from uuid_utils.compat import uuid7

from commands import session as sessions
from commands import user as users
from events.session import SessionRevoked, session_stream
from events.user import user_stream
from infra.auth import Principal
from infra.authz import Action
from infra.http import Problem, correlation_of
from infra.store import NO_STREAM, ConcurrencyError, StreamAppend
from infra.tokens import InvalidToken
from write_api.handling import load, metadata, new_events, retrying, user_id_of
from write_api.services import Services

SESSION_LIFETIME = timedelta(days=30)
_NO_STORE = {"Cache-Control": "no-store"}


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class RefreshBody(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class LogoutBody(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=512)] | None = None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(refresh_token: str) -> tuple[str, str]:
    session_id, dot, secret = refresh_token.partition(".")
    if not dot or not session_id or not secret or len(session_id) > 64:
        raise sessions.InvalidRefreshToken("not a refresh token")
    return session_id, secret


async def _user(services: Services, username: str) -> tuple[users.Registered, int] | None:
    """The registered user with this username, and its stream version."""
    user_id = await user_id_of(services.store, services.vault, username)
    if user_id is None:
        return None
    state, version = await load(services.store, user_stream(user_id), users.INITIAL, users.evolve)
    return (state, version) if isinstance(state, users.Registered) else None


def _tokens_body(
    services: Services, user: users.Registered, session_id: str, secret: str, position: str
) -> dict[str, Any]:
    access, ttl = services.tokens.issue(user.user_id, session_id, user.roles)
    return {
        "access_token": access,
        "refresh_token": f"{session_id}.{secret}",
        "token_type": "Bearer",
        "expires_in": ttl,
        "position": position,
    }


@post("/v1/auth/login", status_code=200, tags=["auth"], summary="Sign in", opt={"public": True})
async def login(
    request: Request[Any, Any, Any], data: JSONBody[LoginBody], services: NamedDependency[Services]
) -> Response[dict[str, Any]]:
    """Tokens for a good username and password; 401 invalid_credentials otherwise (the same
    for an unknown username, after the same work); 429 after repeated failures."""
    address = request.client.host if request.client else "unknown"
    name = data.username.lower()
    wait = await services.throttle.retry_after(name, address)
    if wait > 0:
        raise Problem(429, "too_many_attempts", "too many failed logins; wait before trying again",
                      headers={"Retry-After": str(wait)})  # fmt: skip
    found = await _user(services, name)
    # An unknown username is checked against a dummy hash: the same time, the same answer.
    password_hash = (
        await services.vault.reveal(found[0].password_hash) if found else services.dummy_hash
    )
    if not await services.passwords.verify(password_hash, data.password) or found is None:
        await services.throttle.failed(name, address)
        raise Problem(401, "invalid_credentials", "wrong username or password")
    await services.throttle.succeeded(name)
    user, version = found
    correlation, traceparent = correlation_of(request)
    meta = metadata(user.user_id, correlation, traceparent, None)
    now = datetime.now(UTC)
    appends = []
    if services.passwords.needs_rehash(password_hash):
        (rehashed,) = await services.vault.seal(
            user.user_id, await services.passwords.hash(data.password)
        )
        change = users.ChangePassword(password_hash=rehashed, reason="rehash", at=now)
        appends.append(
            StreamAppend(
                user_stream(user.user_id),
                version,
                new_events(users.decide_password(change, user), meta),
            )
        )
    session_id = str(uuid7())
    secret = secrets.token_urlsafe(32)
    start = sessions.StartSession(session_id=session_id, user_id=user.user_id, refresh_hash=_digest(secret),
                                  at=now, expires_at=now + SESSION_LIFETIME)  # fmt: skip
    appends.append(StreamAppend(session_stream(session_id), NO_STREAM,
                                new_events(sessions.decide(start, sessions.INITIAL), meta)))  # fmt: skip
    try:
        result = await services.store.append(appends)
    except ConcurrencyError:
        # Someone changed the user meanwhile (a rehash by a parallel login): sign in without ours.
        result = await services.store.append(appends[-1:])
    position = result.position.token()
    return Response(
        _tokens_body(services, user, session_id, secret, position),
        headers={**_NO_STORE, "X-Position": position},
    )


@post(
    "/v1/auth/refresh",
    status_code=200,
    tags=["auth"],
    summary="Rotate the refresh token",
    opt={"public": True},
)
async def refresh(
    request: Request[Any, Any, Any],
    data: JSONBody[RefreshBody],
    services: NamedDependency[Services],
) -> Response[dict[str, Any]]:
    """A new token pair; the presented refresh token is spent. A spent one revokes the
    whole session: 401 refresh_token_reused."""
    session_id, secret = _split(data.refresh_token)
    correlation, traceparent = correlation_of(request)

    async def once() -> Response[dict[str, Any]]:
        state, version = await load(
            services.store, session_stream(session_id), sessions.INITIAL, sessions.evolve
        )
        next_secret = secrets.token_urlsafe(32)
        command = sessions.RefreshSession(
            presented_hash=_digest(secret), next_hash=_digest(next_secret), at=datetime.now(UTC)
        )
        decided = sessions.decide(command, state)
        user_id = state.user_id if isinstance(state, sessions.Active) else None
        meta = metadata(user_id, correlation, traceparent, None)
        # a parallel refresh or logout may get there first: then retrying() decides again
        result = await services.store.append(
            [StreamAppend(session_stream(session_id), version, new_events(decided, meta))]
        )
        if any(isinstance(e, SessionRevoked) for e in decided):
            raise sessions.RefreshTokenReused(
                "this refresh token was already used; the session is revoked"
            )
        found = await _user_by_id(services, user_id)
        if found is None:
            raise sessions.InvalidRefreshToken("the session's user is gone")
        position = result.position.token()
        return Response(_tokens_body(services, found, session_id, next_secret, position),
                        headers={**_NO_STORE, "X-Position": position})  # fmt: skip

    return await retrying(once, busy="the session")


async def _user_by_id(services: Services, user_id: str | None) -> users.Registered | None:
    if user_id is None:
        return None
    state, _ = await load(services.store, user_stream(user_id), users.INITIAL, users.evolve)
    return state if isinstance(state, users.Registered) else None


@post("/v1/auth/logout", status_code=204, tags=["auth"], summary="Sign out", opt={"public": True})
async def logout(
    request: Request[Any, Any, Any],
    services: NamedDependency[Services],
    data: JSONBody[LogoutBody | None] = None,
) -> None:
    """Revoke the session of the bearer token, or of the refresh token in the body."""
    session_id: str | None = None
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Problem(401, "invalid_token", "Authorization must be 'Bearer <access token>'")
        try:
            session_id = services.tokens.verify(token).session_id
        except InvalidToken as e:
            raise Problem(401, "invalid_token", "the access token is not valid") from e
    elif data is not None and data.refresh_token is not None:
        candidate, secret = _split(data.refresh_token)
        state, _ = await load(
            services.store, session_stream(candidate), sessions.INITIAL, sessions.evolve
        )
        if not (isinstance(state, sessions.Active) and state.current_hash == _digest(secret)):
            raise sessions.InvalidRefreshToken("unknown refresh token")
        session_id = candidate
    else:
        raise Problem(
            401, "unauthorized", "send the access token, or the refresh token in the body"
        )
    correlation, traceparent = correlation_of(request)
    revoking = session_id

    async def once() -> None:
        state, version = await load(
            services.store, session_stream(revoking), sessions.INITIAL, sessions.evolve
        )
        decided = sessions.decide(
            sessions.RevokeSession(reason="logout", at=datetime.now(UTC)), state
        )
        if decided:
            user_id = state.user_id if isinstance(state, sessions.Active) else None
            meta = metadata(user_id, correlation, traceparent, None)
            await services.store.append(
                [StreamAppend(session_stream(revoking), version, new_events(decided, meta))]
            )

    await retrying(once, busy="the session")


class PasswordBody(msgspec.Struct, forbid_unknown_fields=True):
    current_password: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    new_password: Annotated[str, msgspec.Meta(min_length=8, max_length=256)]


@put(
    "/v1/me/password",
    status_code=204,
    tags=["auth"],
    summary="Change the password",
    opt={"action": Action.CHANGE_PASSWORD},
)
async def change_password(
    request: Request[Any, Any, Any], data: JSONBody[PasswordBody],
    services: NamedDependency[Services], principal: NamedDependency[Principal],
) -> Response[None]:  # fmt: skip
    """A new password; every other session of the user is revoked with it, atomically."""
    correlation, traceparent = correlation_of(request)
    new_hash: str | None = None

    async def once() -> Response[None]:
        nonlocal new_hash
        user, version = await load(
            services.store, user_stream(principal.user_id), users.INITIAL, users.evolve
        )
        if not isinstance(user, users.Registered):
            raise Problem(404, "user_not_found", "no such user")
        current = await services.vault.reveal(user.password_hash)
        if not await services.passwords.verify(current, data.current_password):
            raise Problem(403, "wrong_password", "the current password is not right")
        if new_hash is None:
            (new_hash,) = await services.vault.seal(
                user.user_id, await services.passwords.hash(data.new_password)
            )
        now = datetime.now(UTC)
        meta = metadata(principal.user_id, correlation, traceparent, None)
        change = users.ChangePassword(password_hash=new_hash, reason="changed", at=now)
        appends = [
            StreamAppend(
                user_stream(user.user_id),
                version,
                new_events(users.decide_password(change, user), meta),
            )
        ]
        for session_id in await _other_sessions(services, user.user_id, principal.session_id):
            state, session_version = await load(
                services.store, session_stream(session_id), sessions.INITIAL, sessions.evolve
            )
            revoked = sessions.decide(
                sessions.RevokeSession(reason="password_changed", at=now), state
            )
            if revoked:
                appends.append(
                    StreamAppend(
                        session_stream(session_id), session_version, new_events(revoked, meta)
                    )
                )
        # the user or one of the sessions may move meanwhile: then retrying() looks again
        result = await services.store.append(appends)
        return Response(None, status_code=204, headers={"X-Position": result.position.token()})

    return await retrying(once, busy="the account")


async def _other_sessions(services: Services, user_id: str, keep: str) -> list[str]:
    """The user's live sessions but `keep`, from the sessions read model."""
    async with services.links.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT session_id::text FROM rm_sessions.sessions"
            " WHERE user_id = %s AND revoked_at IS NULL AND session_id <> %s ORDER BY session_id",
            (user_id, keep),
        )
        return [row[0] for row in await cur.fetchall()]
