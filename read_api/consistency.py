"""X-Min-Position / X-Wait-Ms handling and the X-Projection-Position header."""

from __future__ import annotations

from typing import Any

from litestar import Request

from events.envelope import Position
from infra.http import Problem
from read_api.freshness import DEFAULT_WAIT_S, MAX_WAIT_MS
from read_api.services import Services


async def fresh_enough(
    request: Request[Any, Any, Any], services: Services, projections: list[str]
) -> dict[str, str]:
    """Wait for `projections` to reach the request's X-Min-Position, if it sent one.

    Returns the X-Projection-Position header for the response; raises 503 with
    Retry-After when they have not got there in time, 400 for a malformed header.
    """
    token = request.headers.get("x-min-position")
    if token:
        try:
            wanted = Position.parse(token)
        except ValueError as e:
            raise Problem(400, "invalid_position", "X-Min-Position is not a position token") from e
        timeout = DEFAULT_WAIT_S
        raw_wait = request.headers.get("x-wait-ms")
        if raw_wait is not None:
            if not raw_wait.isdigit() or int(raw_wait) > MAX_WAIT_MS:
                raise Problem(400, "invalid_wait", f"X-Wait-Ms must be an integer 0..{MAX_WAIT_MS}")
            timeout = int(raw_wait) / 1000
        if not await services.freshness.wait(projections, wanted, timeout):
            raise Problem(
                503,
                "not_yet_consistent",
                "the read model has not caught up with that position yet",
                headers={"Retry-After": "1",
                         "X-Projection-Position": services.freshness.position_of(projections).token()},
            )  # fmt: skip
    return {"X-Projection-Position": services.freshness.position_of(projections).token()}
