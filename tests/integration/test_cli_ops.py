"""`hubbub projections` against a real database."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from infra import cli
from tests.fix_servers import Servers

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("isolated_logging")


def _env(servers: Servers, database_url: str) -> dict[str, str]:
    return {
        "HUBBUB_DATABASE_URL": database_url,
        "HUBBUB_NATS_URL": servers.nats_url,
        "COLUMNS": "200",
        "HUBBUB_DATA_DIR": str(servers.data_dir),
    }


def test_projection_status_is_a_table(servers: Servers, database_url: str) -> None:
    result = runner.invoke(cli.app, ["projections", "status"], env=_env(servers, database_url))
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.stdout.splitlines() if "users" in line]
    assert any(state in row for state in ("live", "missing", "catching_up"))


def test_rebuilding_an_unknown_projection_is_exit_code_2(
    servers: Servers, database_url: str
) -> None:
    result = runner.invoke(
        cli.app, ["projections", "rebuild", "nope"], env=_env(servers, database_url)
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["hubbub: unknown projection 'nope'"]
