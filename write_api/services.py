"""The write API's collaborators, built once per process by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Litestar, Request
from nats.aio.client import Client as NATS
from psycopg_pool import AsyncConnectionPool

from infra.settings import Settings
from infra.store import EventStore
from write_api.passwords import Passwords


@dataclass
class Services:
    settings: Settings
    pool: AsyncConnectionPool
    store: EventStore
    passwords: Passwords
    nats: NATS | None = None

    @classmethod
    def of(cls, app: Litestar) -> Services:
        services: Services = app.state.services
        return services


def services(request: Request) -> Services:  # type: ignore[type-arg]
    """Dependency: the process's Services."""
    return Services.of(request.app)
