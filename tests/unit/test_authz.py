"""Every route of every app declares its authorization: public, or an action with a rule."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from litestar import Litestar

from infra.authz import RULES, Action, declared
from infra.settings import Settings
from read_api.app import create_app as read_app
from write_api.app import create_app as write_app

SETTINGS = replace(
    Settings.from_env(), database_url="postgresql://unused/never-connected", nats_url=None,
    data_dir=Path("/nonexistent"), jwt_secret="x" * 64,
)  # fmt: skip


@pytest.mark.parametrize("factory", [write_app, read_app], ids=["write", "read"])
def test_every_route_declares_public_or_an_action(factory: object) -> None:
    app: Litestar = factory(SETTINGS)  # type: ignore[operator]
    ours = [
        handler
        for route in app.routes
        if not route.path.startswith("/schema")  # Litestar's OpenAPI document
        for handler in getattr(route, "route_handlers", [])
    ]
    assert ours, "no routes found"
    for handler in ours:
        declared(handler)  # raises for a route that declares nothing


def test_every_action_has_a_rule() -> None:
    assert set(RULES) == set(Action)
