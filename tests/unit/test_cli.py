"""The `hubbub` command line, driven in-process with typer's CliRunner."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra import cli
from infra.settings import Settings
from infra.supervisor import Child

runner = CliRunner()

EVERY_PART = [
    ["run"],
    ["write-api"],
    ["read-api"],
    ["gateway"],
    ["relay"],
    ["projector"],
    ["scheduler"],
    ["migrate"],
    ["projections", "status"],
    ["projections", "rebuild", "users"],
]


pytestmark = pytest.mark.usefixtures("isolated_logging")


@pytest.fixture
def unreachable_urls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """URLs set, so no command starts embedded servers (nothing listens there either)."""
    monkeypatch.setenv("HUBBUB_DATABASE_URL", "postgresql://hubbub:s3cret@127.0.0.1:1/hubbub")
    monkeypatch.setenv("HUBBUB_NATS_URL", "nats://127.0.0.1:1")
    monkeypatch.setenv("HUBBUB_DATA_DIR", str(tmp_path))


def test_help_lists_the_commands() -> None:
    result = runner.invoke(cli.app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "write-api", "read-api", "gateway", "relay", "projector", "scheduler",
                    "migrate", "projections"):  # fmt: skip
        assert command in result.stdout


def test_projections_help_lists_its_commands() -> None:
    result = runner.invoke(cli.app, ["projections", "--help"])
    assert result.exit_code == 0
    assert "status" in result.stdout
    assert "rebuild" in result.stdout


@pytest.mark.parametrize("argv", EVERY_PART, ids=" ".join)
def test_a_bad_port_is_one_line_and_exit_code_2(argv: list[str]) -> None:
    result = runner.invoke(cli.app, argv, env={"HUBBUB_WRITE_API_PORT": "eighty"})
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "hubbub: HUBBUB_WRITE_API_PORT must be a port number, got 'eighty'"
    ]
    assert result.stdout == ""


def test_a_bad_log_level_is_one_line_and_exit_code_2() -> None:
    result = runner.invoke(cli.app, ["migrate"], env={"HUBBUB_LOG_LEVEL": "chatty"})
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1
    assert "HUBBUB_LOG_LEVEL" in result.stderr


@pytest.mark.usefixtures("unreachable_urls")
def test_run_supervises_every_part_and_shows_where_they_are(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[Sequence[Child]] = []

    def serve_all(
        settings: Settings, children: Sequence[Child], *, on_ready: Callable[[Settings], None]
    ) -> int:
        started.append(children)
        on_ready(settings)
        return 0

    monkeypatch.setattr(cli, "serve_all", serve_all)
    result = runner.invoke(cli.app, ["run"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    [children] = started
    assert [c.name for c in children] == [
        "write-api",
        "read-api",
        "gateway",
        "relay",
        "projector",
        "scheduler",
    ]
    assert children[0].argv == [sys.executable, "-m", "infra.cli", "write-api"]
    assert "http://127.0.0.1:8000" in result.stdout
    assert "http://127.0.0.1:8001" in result.stdout
    assert "ws://127.0.0.1:8002/v1/ws" in result.stdout
    assert "postgresql://hubbub:***@127.0.0.1:1/hubbub" in result.stdout
    assert "s3cret" not in result.stdout


@dataclass
class _Row:
    name: str
    position: str
    head_position: str
    lag_events: int
    lag_seconds: float | None
    status: str


def test_redact_hides_only_the_password() -> None:
    assert cli.redact("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert cli.redact("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
    assert cli.redact(None) == "-"


def test_a_short_jwt_secret_is_one_line_and_exit_code_2() -> None:
    result = runner.invoke(cli.app, ["migrate"], env={"HUBBUB_JWT_SECRET": "too-short"})
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "hubbub: HUBBUB_JWT_SECRET must be at least 32 bytes (HS256 keys shorter than the hash are weak)"
    ]
