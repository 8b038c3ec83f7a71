"""The embedded servers' URLs (infra.embedded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.embedded import postgres_url


def test_postgres_url_uses_the_socket_when_its_path_fits(tmp_path: Path) -> None:
    url = postgres_url(tmp_path / "postgres", 55432, "hubbub")
    assert url == f"postgresql://postgres@/hubbub?host={tmp_path}/postgres&port=55432"


def test_postgres_url_falls_back_to_tcp_when_the_socket_path_is_too_long(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    assert postgres_url(deep, 55432, "hubbub") == "postgresql://postgres@127.0.0.1:55432/hubbub"


def test_postgres_url_is_absolute_and_quoted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = postgres_url(Path("a b") / "postgres", 1, "db")
    assert url == f"postgresql://postgres@/db?host={tmp_path}/a%20b/postgres&port=1"
