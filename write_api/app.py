"""The write API: commands in, events out (CONTRACT.md, Write API)."""

from __future__ import annotations

import contextlib
import gc
import secrets
from collections.abc import AsyncIterator, Iterator

from litestar import Litestar
from litestar.di import Provide

from commands import auction, channel
from commands.errors import DomainError
from infra import authz, http
from infra.auth import Authenticator
from infra.settings import Settings
from infra.store import EventStore
from infra.tokens import Tokens
from infra.vault import ForgottenUser, Vault
from projections.registry import ensure_all
from projections.sessions import RevokedSessions
from write_api import auctions, auth, channels, messages, roles, sessions
from write_api.combiner import AppendCombiner
from write_api.errors import on_domain_error, on_forgotten_user
from write_api.passwords import Passwords
from write_api.sequencer import Sequencer
from write_api.services import Services, services
from write_api.throttle import LoginThrottle, ThrottlePolicy

# Objects the cyclic collector tracks, allocated and not yet freed, between two young
# collections. The default (700) runs one every few commands, and every tenth of those
# walks the older objects too: the channels' cached states, which grow with every message.
# That cost a fifth of a send's CPU; most of what a request allocates is freed by reference
# counting anyway, so a collection now and then finds as much.
GC_YOUNG_THRESHOLD = 10_000


@contextlib.contextmanager
def fewer_collections(young: int = GC_YOUNG_THRESHOLD) -> Iterator[None]:
    """The cyclic collector's young threshold raised to `young` while the app runs."""
    before = gc.get_threshold()
    gc.set_threshold(young, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def create_app(
    settings: Settings | None = None, throttle_policy: ThrottlePolicy | None = None
) -> Litestar:
    """The write API application (uvicorn factory)."""
    settings = settings or Settings.from_env()
    assert settings.database_url, "set HUBBUB_DATABASE_URL (the CLI does it for embedded servers)"

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with http.connections(settings, "hubbub-write-api") as links:
            await ensure_all(links.pool)  # the revocation list reads rm_sessions
            store = EventStore(links.pool)
            passwords = Passwords()
            tokens = Tokens(settings.resolved_jwt_secret())
            revoked = RevokedSessions(links.pool)
            await revoked.start()
            combiner = AppendCombiner(store)  # one transaction for appends to many streams
            sequencer = Sequencer(store, channel.decide, channel.evolve, channel.INITIAL,
                                  combiner=combiner)  # fmt: skip
            bids = Sequencer(store, auction.decide, auction.evolve, auction.INITIAL,
                             combiner=combiner)  # fmt: skip
            app.state.services = Services(
                settings, links, store, passwords, tokens=tokens,
                throttle=LoginThrottle(links.pool, throttle_policy),
                dummy_hash=await passwords.hash(secrets.token_urlsafe(16)),
                auth=Authenticator(tokens, revoked), channels=sequencer, auctions=bids,
                vault=await Vault.load(links.pool),
            )  # fmt: skip
            try:
                with fewer_collections():
                    yield
            finally:
                await sequencer.close()
                await bids.close()
                await revoked.close()
                if store.notifier is not None:
                    await store.notifier.close()
                passwords.close()

    return http.service_app(
        service="write-api",
        command_metrics=True,
        title="Hubbub write API",
        route_handlers=[
            auth.register,
            sessions.login,
            sessions.refresh,
            sessions.logout,
            sessions.change_password,
            roles.grant_role,
            roles.revoke_role,
            channels.create_channel,
            channels.join_channel,
            channels.invite,
            channels.leave_channel,
            channels.delete_channel,
            channels.open_direct,
            messages.send_message,
            messages.edit_message,
            messages.delete_message,
            messages.mark_read,
            messages.mark_delivered,
            messages.add_reaction,
            messages.remove_reaction,
            auctions.open_auction,
            auctions.place_bid,
            auctions.buy_now,
            auctions.cancel,
        ],
        dependencies={"principal": Provide(authz.principal, sync_to_thread=False)},
        lifespan=lifespan,
        provide_services=services,
        guards=[authz.guard],
        exception_handlers={DomainError: on_domain_error, ForgottenUser: on_forgotten_user},
    )
