"""Projector processes may split the projections between them: `hubbub projector --only`."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from infra import cli
from projections.registry import ALL
from projections.runner import selection


def test_no_names_is_every_projection_on_the_usual_consumer() -> None:
    projections, consumer = selection([])
    assert projections == ALL
    assert consumer == "projector"


def test_a_subset_keeps_the_registry_order_and_gets_a_consumer_of_its_own() -> None:
    projections, consumer = selection(["messages", "channels", "channels"])
    assert [p.name for p in projections] == ["channels", "messages"]
    assert consumer == "projector-channels-messages"
    assert selection(["auctions"])[1] != consumer  # each set reads every message itself


def test_an_unknown_projection_is_refused() -> None:
    with pytest.raises(KeyError):
        selection(["users", "nope"])
    result = CliRunner().invoke(cli.app, ["projector", "--only", "users,nope"])
    assert result.exit_code != 0
    assert "no projection called 'nope'" in result.output
