"""The write API's collaborators, built once per process by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Litestar, Request

from commands.auction import AuctionCommand, AuctionState
from commands.channel import ChannelCommand, ChannelState
from events.auction import AuctionEvent
from events.channel import ChannelEvent
from infra.auth import Authenticator
from infra.http import Links
from infra.settings import Settings
from infra.store import EventStore
from infra.tokens import Tokens
from infra.vault import Vault
from write_api.passwords import Passwords
from write_api.sequencer import Sequencer
from write_api.throttle import LoginThrottle


@dataclass
class Services:
    settings: Settings
    links: Links
    store: EventStore
    passwords: Passwords
    tokens: Tokens
    throttle: LoginThrottle
    dummy_hash: str  # what an unknown username's password is checked against
    auth: Authenticator
    channels: Sequencer[ChannelCommand, ChannelState, ChannelEvent]
    auctions: Sequencer[AuctionCommand, AuctionState, AuctionEvent]
    vault: Vault  # per-user keys: personal fields are sealed before they are decided on

    @classmethod
    def of(cls, app: Litestar) -> Services:
        services: Services = app.state.services
        return services


def services(request: Request) -> Services:  # type: ignore[type-arg]
    """Dependency: the process's Services."""
    return Services.of(request.app)
