"""The read API: queries over read models only (CONTRACT.md, Read API)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from litestar import Litestar
from litestar.di import Provide

from infra import authz, http
from infra.auth import Authenticator
from infra.history import Aggregate
from infra.settings import Settings
from infra.tokens import Tokens
from projections.registry import ALL, ensure_all
from projections.sessions import RevokedSessions
from read_api import auctions, audit, channels, me, messages, ops, users
from read_api.freshness import Freshness
from read_api.services import Services, services


def create_app(
    settings: Settings | None = None, aggregates: Mapping[str, Aggregate] | None = None
) -> Litestar:
    """The read API application. `aggregates` (by stream category) are what the audit
    state view folds with: the deciders', which only the bootstrap may import, so the
    process's factory is infra.bootstrap:create_read_api."""
    settings = settings or Settings.from_env()
    assert settings.database_url, "set HUBBUB_DATABASE_URL (the CLI does it for embedded servers)"

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        assert settings.database_url
        async with http.connections(settings, "hubbub-read-api") as links:
            await ensure_all(links.pool)  # the projector makes them too; whoever is first
            freshness = Freshness(settings.database_url, links.pool, [p.name for p in ALL])
            await freshness.start()
            revoked = RevokedSessions(links.pool)
            await revoked.start()
            auth = Authenticator(Tokens(settings.resolved_jwt_secret()), revoked)
            app.state.services = Services(settings, links, freshness, auth, aggregates or {})
            try:
                yield
            finally:
                await revoked.close()
                await freshness.close()

    return http.service_app(
        service="read-api",
        title="Hubbub read API",
        route_handlers=[
            users.get_user,
            users.get_me,
            channels.list_channels,
            channels.get_channel,
            channels.list_members,
            messages.list_messages,
            me.get_unread,
            me.list_notifications,
            auctions.list_auctions,
            auctions.get_auction,
            auctions.list_bids,
            audit.export_events,
            audit.verify,
            audit.state,
            ops.list_projections,
        ],
        lifespan=lifespan,
        provide_services=services,
        guards=[authz.guard],
        dependencies={"principal": Provide(authz.principal, sync_to_thread=False)},
    )
