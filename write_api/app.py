"""The write API: commands in, events out (CONTRACT.md, Write API)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

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


def _checks(app: Litestar) -> dict[str, http.Check]:
    s = Services.of(app)

    async def postgres() -> None:
        async with s.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")

    async def nats() -> None:
        if s.nats is None or not s.nats.is_connected:
            raise ConnectionError("nats is not connected")

    return {"postgres": postgres, "nats": nats}


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

    handlers: dict[Any, Any] = {**http.EXCEPTION_HANDLERS, DomainError: on_domain_error}
    return Litestar(
        route_handlers=[auth.register, *http.health_handlers(_checks)],
        dependencies={"services": Provide(services, sync_to_thread=False)},
        lifespan=[lifespan],
        exception_handlers=handlers,
        middleware=[http.RequestContext("write-api")],
        request_max_body_size=http.MAX_BODY_BYTES,
        logging_config=None,  # infra.logging configures the process
        openapi_config=OpenAPIConfig(title="Hubbub write API", version="1.0.0", path="/schema"),
    )
