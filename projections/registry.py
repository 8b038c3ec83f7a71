"""Every projection this code base knows, by name."""

from __future__ import annotations

from projections import sessions, users
from projections.runtime import Projection

ALL: tuple[Projection, ...] = (users, sessions)


def by_name(name: str) -> Projection:
    """The projection called `name`; KeyError when there is none."""
    for projection in ALL:
        if projection.name == name:
            return projection
    raise KeyError(name)
