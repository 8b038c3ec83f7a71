"""The read API's collaborators, built once per process by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Litestar, Request
from psycopg_pool import AsyncConnectionPool

from infra.auth import Authenticator
from infra.http import Links
from infra.settings import Settings
from read_api.freshness import Freshness


@dataclass
class Services:
    settings: Settings
    links: Links
    freshness: Freshness
    auth: Authenticator

    @property
    def pool(self) -> AsyncConnectionPool:
        return self.links.pool

    @classmethod
    def of(cls, app: Litestar) -> Services:
        services: Services = app.state.services
        return services


def services(request: Request[Any, Any, Any]) -> Services:
    """Dependency: the process's Services."""
    return Services.of(request.app)
