"""The write API's collaborators, built once per process by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Litestar, Request

from infra.http import Links
from infra.settings import Settings
from infra.store import EventStore
from write_api.passwords import Passwords


@dataclass
class Services:
    settings: Settings
    links: Links
    store: EventStore
    passwords: Passwords

    @classmethod
    def of(cls, app: Litestar) -> Services:
        services: Services = app.state.services
        return services


def services(request: Request) -> Services:  # type: ignore[type-arg]
    """Dependency: the process's Services."""
    return Services.of(request.app)
