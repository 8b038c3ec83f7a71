"""The read API's collaborators, built once per process by the app's lifespan."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar, Request
from psycopg_pool import AsyncConnectionPool

from infra.auth import Authenticator
from infra.history import Aggregate
from infra.http import Links
from infra.settings import Settings
from infra.store import EventStore
from read_api.freshness import Freshness


@dataclass
class Services:
    settings: Settings
    links: Links
    freshness: Freshness
    auth: Authenticator
    # By stream category, for the audit views' time travel (the bootstrap injects them).
    aggregates: Mapping[str, Aggregate] = field(default_factory=dict)

    @property
    def pool(self) -> AsyncConnectionPool:
        return self.links.pool

    @property
    def store(self) -> EventStore:
        """The event store, for the audit and ops views (a reader: it never notifies)."""
        return EventStore(self.pool, notify=False)

    @classmethod
    def of(cls, app: Litestar) -> Services:
        services: Services = app.state.services
        return services


def services(request: Request[Any, Any, Any]) -> Services:
    """Dependency: the process's Services."""
    return Services.of(request.app)
