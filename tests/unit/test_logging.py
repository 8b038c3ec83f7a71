"""One line per event, in one shape, whoever logs it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import structlog

from infra.logging import configure_logging
from infra.settings import Settings

pytestmark = pytest.mark.usefixtures("isolated_logging")


def settings(**changes: Any) -> Settings:
    return Settings(database_url=None, nats_url=None, data_dir=Path("/nonexistent"), **changes)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_carry_context_from_structlog_and_stdlib_alike(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(settings(log_format="json"), service="write-api")
    structlog.contextvars.bind_contextvars(correlation_id="c-1")
    structlog.get_logger("hubbub.test").info("bid accepted", amount=1200)
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)

    ours, theirs = json_lines(capsys.readouterr().err)
    assert ours["event"] == "bid accepted"
    assert ours["amount"] == 1200
    assert theirs["event"] == "Started server process [42]"
    assert theirs["logger"] == "uvicorn.error"
    for line in (ours, theirs):
        assert line["correlation_id"] == "c-1"
        assert line["service"] == "write-api"
        assert line["level"] == "info"
        assert line["timestamp"].endswith("Z")


def test_configuring_again_replaces_rather_than_duplicates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(settings(log_format="json"))
    configure_logging(settings(log_format="json"))
    structlog.get_logger("hubbub.test").warning("once")
    assert len(json_lines(capsys.readouterr().err)) == 1
    assert [h.get_name() for h in logging.getLogger().handlers].count("hubbub") == 1


def test_the_level_filters_both_kinds_of_logger(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(settings(log_format="json", log_level="WARNING"))
    structlog.get_logger("hubbub.test").info("hidden")
    logging.getLogger("nats").info("hidden too")
    structlog.get_logger("hubbub.test").warning("shown")
    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == ["shown"]


def test_exceptions_stay_on_one_json_line_without_locals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(settings(log_format="json"))
    password = "hunter2"
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger("hubbub.test").exception("failed", user="u1")
    [line] = json_lines(capsys.readouterr().err)
    assert line["exception"][0]["exc_type"] == "RuntimeError"
    assert password not in json.dumps(line)


def test_console_format_is_one_readable_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(settings(log_format="console"))
    structlog.get_logger("hubbub.test").info("relay is the leader", batch=3)
    [line] = capsys.readouterr().err.splitlines()
    assert "relay is the leader" in line
    assert "batch=3" in line


def test_an_unknown_level_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="HUBBUB_LOG_LEVEL"):
        configure_logging(settings(log_level="CHATTY"))
