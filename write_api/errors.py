"""Domain errors as problem+json: the one place the write API maps them."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response

from commands.errors import DomainError
from infra.http import Problem, problem_response
from infra.vault import ForgottenUser


def on_domain_error(_: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    return problem_response(Problem(exc.status, exc.code, exc.detail, **dict(exc.extra)))


def on_forgotten_user(_: Request[Any, Any, Any], exc: ForgottenUser) -> Response[dict[str, Any]]:
    """A forgotten user's token may outlive them by a moment; their writes stop at once."""
    return problem_response(Problem(401, "user_forgotten", "this account was erased"))
