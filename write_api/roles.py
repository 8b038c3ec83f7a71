"""Granting and revoking roles (admin only)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from litestar import Request, Response, delete, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from commands import user as users
from events.user import user_stream
from infra.auth import Principal
from infra.authz import Action
from infra.http import Problem, correlation_of
from infra.store import EventStore, StreamAppend
from write_api.handling import (
    Decision,
    IdempotentRequest,
    answer,
    execute,
    idempotency_key,
    load,
    metadata,
    new_events,
    path_id,
)
from write_api.services import Services

Role = Literal["admin", "auditor", "operator"]


class RoleBody(msgspec.Struct, forbid_unknown_fields=True):
    role: Role


async def is_admin(store: EventStore, user_id: str) -> bool:
    """Whether the user is an admin now (its stream, not its token's snapshot)."""
    state, _ = await load(store, user_stream(user_id), users.INITIAL, users.evolve)
    return isinstance(state, users.Registered) and "admin" in state.roles


async def require_admin(services: Services, principal: Principal) -> None:
    """403 unless the caller is an admin now."""
    if not await is_admin(services.store, principal.user_id):
        raise Problem(403, "forbidden", "only an admin may change roles")


def _user_id(raw: str) -> str:
    return path_id(raw, "user_not_found", "no such user")


async def _change(request: Request[Any, Any, Any], services: Services, principal: Principal, user_id: str,
                  command: users.GrantRole | users.RevokeRole, body: Any) -> Response[dict[str, Any]]:  # fmt: skip
    await require_admin(services, principal)
    correlation, traceparent = correlation_of(request)
    key = idempotency_key(request.headers.get("idempotency-key"))
    idem = (IdempotentRequest.of(services.settings.resolved_jwt_secret(), principal.user_id, key,
                                 request.method, request.url.path, body) if key else None)  # fmt: skip
    stream = user_stream(user_id)

    async def attempt() -> Decision:
        state, version = await load(services.store, stream, users.INITIAL, users.evolve)
        decided = users.decide_role(command, state)
        return Decision([StreamAppend(stream, version, new_events(decided, metadata(principal.user_id, correlation, traceparent, idem)))] if decided else [],
                        {"user_id": user_id})  # fmt: skip

    return answer(await execute(services.store, attempt, idem), 200)


@post(
    "/v1/users/{user_id:str}/roles",
    status_code=200,
    tags=["users"],
    summary="Grant a role (admin)",
    opt={"action": Action.MANAGE_ROLES},
)
async def grant_role(
    request: Request[Any, Any, Any], user_id: FromPath[str], data: JSONBody[RoleBody],
    services: NamedDependency[Services], principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:  # fmt: skip
    """Grant `role`; granting a held role changes nothing."""
    command = users.GrantRole(role=data.role, by=principal.user_id, at=datetime.now(UTC))
    return await _change(request, services, principal, _user_id(user_id), command, data)


@delete(
    "/v1/users/{user_id:str}/roles/{role:str}",
    status_code=200,
    tags=["users"],
    summary="Revoke a role (admin)",
    opt={"action": Action.MANAGE_ROLES},
)
async def revoke_role(
    request: Request[Any, Any, Any], user_id: FromPath[str], role: FromPath[str],
    services: NamedDependency[Services], principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:  # fmt: skip
    """Revoke `role`; revoking one not held changes nothing."""
    command = users.RevokeRole(role=role, by=principal.user_id, at=datetime.now(UTC))
    return await _change(request, services, principal, _user_id(user_id), command, {"role": role})
