"""Account endpoints: register (login, refresh and the rest come with the identity issue)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from uuid_utils.compat import uuid7

from commands import user as users
from events.user import user_stream
from infra.http import correlation_of
from infra.store import NO_STREAM, StreamAppend
from write_api.handling import (
    Decision,
    IdempotentRequest,
    answer,
    execute,
    idempotency_key,
    metadata,
    new_events,
    user_id_of,
)
from write_api.services import Services

Username = Annotated[str, msgspec.Meta(min_length=3, max_length=32, pattern=r"^[a-z0-9_.-]+$")]
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=256)]
DisplayName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class RegisterBody(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: Password
    display_name: DisplayName | None = None


class Registered(msgspec.Struct):
    user_id: str
    position: str


@post(
    "/v1/auth/register",
    status_code=201,
    tags=["auth"],
    summary="Create an account",
    opt={"public": True},
)
async def register(
    request: Request[Any, Any, Any],
    data: JSONBody[RegisterBody],
    services: NamedDependency[Services],
) -> Response[dict[str, Any]]:
    """Register: 201 with the new user's id; 409 username_taken."""
    correlation, traceparent = correlation_of(request)
    idem = None
    key = idempotency_key(request.headers.get("idempotency-key"))
    if key is not None:
        idem = IdempotentRequest.of(
            services.settings.resolved_jwt_secret(),
            "anonymous",
            key,
            "POST",
            request.url.path,
            data,
        )
    store = services.store
    user_id = str(uuid7())
    password_hash: str | None = None

    async def attempt() -> Decision:
        nonlocal password_hash
        # A cheap refusal before the expensive hash; the append re-checks.
        if await user_id_of(store, services.vault, data.username) is not None:
            raise users.UsernameTaken(f"username {data.username!r} is taken")
        if password_hash is None:
            password_hash = await services.passwords.hash(data.password)
        # Personal data reaches the decider, and so the log, sealed with the user's own key.
        username, display_name, sealed_hash = await services.vault.seal(
            user_id, data.username, data.display_name or data.username, password_hash
        )
        command = users.RegisterUser(
            user_id=user_id,
            username=username,
            display_name=display_name,
            password_hash=sealed_hash,
            at=datetime.now(UTC),
        )
        decided = users.decide(
            command, users.Registration(user=users.NoUser(), username_claimed=False)
        )
        meta = metadata(user_id, correlation, traceparent, idem)
        # The guard stream's NO_STREAM makes the username unique, race-free.
        streams = {
            "UsernameClaimed": services.vault.username_stream(data.username),
            "UserRegistered": user_stream(user_id),
        }
        appends = [
            StreamAppend(streams[type(event).__name__], NO_STREAM, new_events([event], meta))
            for event in decided
        ]
        return Decision(appends, {"user_id": user_id})

    return answer(await execute(store, attempt, idem), 201)
