"""Domain errors as problem+json: the one place the write API maps them."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response

from commands.errors import DomainError
from infra.http import Problem, problem_response


def on_domain_error(_: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    return problem_response(Problem(exc.status, exc.code, exc.detail, **dict(exc.extra)))
