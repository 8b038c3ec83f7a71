"""User profiles from the users read model."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from infra.auth import Principal
from infra.authz import Action
from infra.http import Problem
from read_api.consistency import fresh_enough
from read_api.services import Services


@get(
    "/v1/users/{user_id:str}",
    tags=["users"],
    summary="A user's public profile",
    opt={"public": True},
)
async def get_user(
    request: Request[Any, Any, Any], user_id: FromPath[str], services: NamedDependency[Services]
) -> Response[dict[str, Any]]:
    """The public profile: id, username, display name, registration time; a forgotten
    user's shows `erased: true` and no name."""
    headers = await fresh_enough(request, services, ["users"])
    try:
        uid = uuid.UUID(user_id)
    except ValueError:
        raise Problem(404, "user_not_found", "no such user") from None
    async with services.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT user_id, username, display_name, registered_at, forgotten_at IS NOT NULL"
            " FROM rm_users.users WHERE user_id = %s",
            (uid,),
            prepare=True,
        )
        row = await cur.fetchone()
    if row is None:
        raise Problem(404, "user_not_found", "no such user", headers=headers)
    body = {"id": str(row[0]), "username": row[1], "display_name": row[2],
            "registered_at": row[3], "erased": row[4]}  # fmt: skip
    return Response(body, headers=headers)


@get("/v1/me", tags=["users"], summary="The caller's own account", opt={"action": Action.READ_ME})
async def get_me(
    request: Request[Any, Any, Any],
    services: NamedDependency[Services],
    principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:
    """id, username, display_name and roles of the caller."""
    headers = await fresh_enough(request, services, ["users"])
    async with services.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT user_id, username, display_name, roles FROM rm_users.users WHERE user_id = %s",
            (uuid.UUID(principal.user_id),),
            prepare=True,
        )
        row = await cur.fetchone()
    if row is None:  # signed in a moment ago, before the users projection caught up
        raise Problem(503, "not_yet_consistent", "your account is not in the read model yet",
                      headers={**headers, "Retry-After": "1"})  # fmt: skip
    body = {
        "id": str(row[0]),
        "username": row[1],
        "display_name": row[2],
        "roles": sorted(row[3]),  # current, not the token's snapshot
    }
    return Response(body, headers=headers)
