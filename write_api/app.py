"""The write API: commands in, events out (CONTRACT.md, Write API)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from litestar import Litestar

from commands.errors import DomainError
from infra import http
from infra.settings import Settings
from infra.store import EventStore
from write_api import auth
from write_api.errors import on_domain_error
from write_api.passwords import Passwords
from write_api.services import Services, services


def create_app(settings: Settings | None = None) -> Litestar:
    """The write API application (uvicorn factory)."""
    settings = settings or Settings.from_env()
    assert settings.database_url, "set HUBBUB_DATABASE_URL (the CLI does it for embedded servers)"

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with http.connections(settings, "hubbub-write-api") as links:
            store = EventStore(links.pool)
            passwords = Passwords()
            app.state.services = Services(settings, links, store, passwords)
            try:
                yield
            finally:
                if store.notifier is not None:
                    await store.notifier.close()
                passwords.close()

    return http.service_app(
        service="write-api",
        title="Hubbub write API",
        route_handlers=[auth.register],
        lifespan=lifespan,
        provide_services=services,
        exception_handlers={DomainError: on_domain_error},
    )
