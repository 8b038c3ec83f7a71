"""The operator's view of the projections: where each is against the head of the log."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from litestar import get
from litestar.di import NamedDependency

from infra.authz import Action
from projections.ops import projection_status
from read_api.services import Services


@get(
    "/v1/ops/projections",
    tags=["ops"],
    summary="Every projection's position and lag",
    opt={"action": Action.OPERATE},
)
async def list_projections(services: NamedDependency[Services]) -> list[dict[str, Any]]:
    """`[{name, position, head_position, lag_events, lag_seconds, status}]`; status is
    live, catching_up, rebuilding, stale (built by an older version) or missing."""
    return [asdict(s) for s in await projection_status(services.pool, services.store)]
