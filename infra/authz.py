"""The one authorization layer. Every route declares, in its `opt`, either `public=True`
or the `action` it performs; `guard` (installed on every app) refuses a route that
declares neither, and applies the action's rule to the caller before the handler runs.
Handlers that act on one object (a channel, a stream) call `authorize` again with it.
A test walks every route of every app, so a new one cannot be forgotten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler

from infra.auth import Principal
from infra.http import Problem


class Action(StrEnum):
    READ_ME = "me:read"
    CHANGE_PASSWORD = "me:change_password"
    LOGOUT = "session:logout"
    MANAGE_ROLES = "roles:manage"
    AUDIT = "audit:read"
    OPERATE = "ops:read"
    CHAT = "chat:write"  # the deciders hold the per-channel rules (member, owner, author)
    READ_CHANNELS = "channels:list"
    READ_CHANNEL = "channel:read"  # a resource: ChannelAccess
    READ_OWN = "me:read_own"  # the caller's unread counts and notifications
    AUCTION = "auction:write"  # the decider holds the per-auction rules (seller, bidder)
    READ_AUCTIONS = "auctions:read"  # listings, one auction, its bids: any signed-in user


@dataclass(frozen=True)
class ChannelAccess:
    """What reading a channel depends on: whether anyone may, and whether the caller is in."""

    visibility: str  # public | private (direct channels are private)
    is_member: bool


Rule = Callable[[Principal, Any], bool]
_STASH = "hubbub.principal"


def _channel_reader(_: Principal, channel: ChannelAccess | None) -> bool:
    if channel is None:  # the route-level check: anyone signed in may ask; the object decides
        return True
    return channel.visibility == "public" or channel.is_member


def _anyone(_: Principal, __: Any) -> bool:
    return True


def _role(role: str) -> Rule:
    def rule(principal: Principal, _: Any) -> bool:
        return principal.has(role)

    return rule


RULES: dict[Action, Rule] = {
    Action.READ_ME: _anyone,
    Action.CHANGE_PASSWORD: _anyone,
    Action.LOGOUT: _anyone,
    # the token's roles are checked here; handlers that grant power recheck the stream
    Action.MANAGE_ROLES: _role("admin"),
    Action.AUDIT: _role("auditor"),
    Action.OPERATE: _role("operator"),
    Action.CHAT: _anyone,
    Action.READ_CHANNELS: _anyone,
    Action.READ_CHANNEL: _channel_reader,
    Action.READ_OWN: _anyone,
    Action.AUCTION: _anyone,
    Action.READ_AUCTIONS: _anyone,
}


def can(principal: Principal, action: Action, resource: Any = None) -> bool:
    """Whether the caller may do `action` (to `resource`). For objects the caller may not
    even know of, answer 404 when this is False, not 403."""
    return RULES[action](principal, resource)


def authorize(principal: Principal, action: Action, resource: Any = None) -> None:
    """403 unless the caller may do `action` (to `resource`)."""
    if not can(principal, action, resource):
        raise Problem(403, "forbidden", f"you may not do {action.value}")


def declared(handler: BaseRouteHandler) -> Action | None:
    """The action a route declared; None for a public one. ValueError when it declared
    neither: an undeclared route is a mistake, never an open door."""
    if handler.opt.get("public") is True:
        return None
    if set(getattr(handler, "http_methods", ())) == {"OPTIONS"}:
        return None  # Litestar's own preflight answer for each path: it runs no handler of ours
    action = handler.opt.get("action")
    if not isinstance(action, Action):
        raise ValueError(f"route {handler.handler_name} declares neither public=True nor an action")
    return action


def principal(request: Request[Any, Any, Any], services: NamedDependency[Any]) -> Principal:
    """Dependency: the authenticated caller, as the guard found it (401 otherwise).

    It takes `services` so that Litestar resolves the two one after the other: dependencies
    it resolves side by side cost an anyio task group per request (a sixth of a send's CPU).
    """
    stashed = request.scope.get("state", {}).get(_STASH)
    if isinstance(stashed, Principal):
        return stashed
    found: Principal = services.auth.principal(request)
    return found


async def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Litestar guard: authenticate and authorize every non-public route. Async although it
    never waits: Litestar runs a plain function guard in a worker thread."""
    try:
        action = declared(handler)
    except ValueError:
        raise Problem(500, "internal_error", "this route has no authorization declared") from None
    if action is None:
        return
    principal = connection.app.state.services.auth.principal(connection)
    authorize(principal, action)
    # The handler's `principal` dependency reuses it. Straight into the scope's state dict:
    # `connection.state` builds a new State object on every access.
    connection.scope.setdefault("state", {})[_STASH] = principal
