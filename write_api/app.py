"""The write API: commands in, events out (CONTRACT.md, Write API)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from litestar import Litestar

from commands.errors import DomainError
from infra import http
from infra.db import make_pool
from infra.nats import connect
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
        assert settings.database_url
        pool = make_pool(settings.database_url, min_size=2, max_size=16, name="hubbub-write-api")
        await pool.open()
        passwords = Passwords()
        app.state.services = Services(settings, pool, EventStore(pool), passwords)
        if settings.nats_url:
            with contextlib.suppress(Exception):  # readiness reports it; commands don't need it
                app.state.services.nats = await connect(settings.nats_url, name="hubbub-write-api")
        try:
            yield
        finally:
            if app.state.services.nats is not None:
                await app.state.services.nats.close()
            if app.state.services.store.notifier is not None:
                await app.state.services.store.notifier.close()
            await pool.close()
            passwords.close()

    return http.service_app(
        service="write-api",
        title="Hubbub write API",
        route_handlers=[auth.register],
        lifespan=lifespan,
        provide_services=services,
        exception_handlers={DomainError: on_domain_error},
    )
