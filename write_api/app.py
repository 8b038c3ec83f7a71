"""The write API: commands in, events out (CONTRACT.md, Write API)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

from litestar import Litestar

from commands.errors import DomainError
from infra import http
from infra.settings import Settings
from infra.store import EventStore
from infra.tokens import Tokens
from write_api import auth, sessions
from write_api.errors import on_domain_error
from write_api.passwords import Passwords
from write_api.services import Services, services
from write_api.throttle import LoginThrottle, ThrottlePolicy


def create_app(
    settings: Settings | None = None, throttle_policy: ThrottlePolicy | None = None
) -> Litestar:
    """The write API application (uvicorn factory)."""
    settings = settings or Settings.from_env()
    assert settings.database_url, "set HUBBUB_DATABASE_URL (the CLI does it for embedded servers)"

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with http.connections(settings, "hubbub-write-api") as links:
            store = EventStore(links.pool)
            passwords = Passwords()
            app.state.services = Services(
                settings, links, store, passwords,
                tokens=Tokens(settings.resolved_jwt_secret()),
                throttle=LoginThrottle(links.pool, throttle_policy),
                dummy_hash=await passwords.hash(secrets.token_urlsafe(16)),
            )  # fmt: skip
            try:
                yield
            finally:
                if store.notifier is not None:
                    await store.notifier.close()
                passwords.close()

    return http.service_app(
        service="write-api",
        title="Hubbub write API",
        route_handlers=[auth.register, sessions.login, sessions.refresh, sessions.logout],
        lifespan=lifespan,
        provide_services=services,
        exception_handlers={DomainError: on_domain_error},
    )
