"""The read API's composition root: the one place that hands the deciders' own evolve
functions (`commands/`) to the read side, which may not import them (STYLE.md; the
import-linter contracts in pyproject). `hubbub read-api` serves `create_read_api`;
`hubbub audit state` folds with the same `AGGREGATES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING

from commands import auction, channel, channel_guard, session, user
from infra.history import Aggregate, plain
from infra.settings import Settings

if TYPE_CHECKING:
    from litestar import Litestar

# By stream category. `username-` streams only guard uniqueness: no decider folds them.
AGGREGATES: Mapping[str, Aggregate] = MappingProxyType(
    {
        "user": Aggregate(user.INITIAL, user.evolve),
        # an active session's current and spent refresh-token hashes
        "session": Aggregate(
            session.INITIAL,
            session.evolve,
            partial(plain, hide=frozenset({"current_hash", "spent"})),
        ),
        "channel": Aggregate(channel.INITIAL, channel.evolve),
        "channelname": Aggregate(channel_guard.NAME_FREE, channel_guard.evolve_name),
        "dm": Aggregate(channel_guard.NO_DIRECT, channel_guard.evolve_direct),
        "auction": Aggregate(auction.INITIAL, auction.evolve),
    }
)


def create_read_api(settings: Settings | None = None) -> Litestar:
    """The read API with the deciders' aggregates."""
    from read_api.app import create_app

    return create_app(settings, aggregates=AGGREGATES)
