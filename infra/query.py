"""Reading the audit tools' parameters one way, whether they come as an HTTP query or as
command-line options: every bad one is named, so the read API answers 400 with `errors`
and the CLI exits 2 with the same messages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from events.envelope import Position


class InvalidQuery(ValueError):
    """One or more parameters are wrong: `errors` holds (parameter, message) pairs."""

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors))
        self.errors = list(errors)


class Collector:
    """Gathers the parameter errors of one request, to report them all at once."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def add(self, name: str, message: str) -> None:
        self.errors.append((name, message))

    def position(self, name: str, raw: str | None) -> Position | None:
        """A position token, or None when absent."""
        if raw is None:
            return None
        try:
            return Position.parse(raw)
        except ValueError as e:
            self.add(name, str(e))
            return None

    def time(self, name: str, raw: str | None) -> datetime | None:
        """An RFC 3339 date-time with its offset (`Z` or `+02:00`), or None when absent."""
        if raw is None:
            return None
        try:
            at = datetime.fromisoformat(raw)
        except ValueError:
            self.add(name, "must be an RFC 3339 date-time, such as 2026-01-31T12:00:00Z")
            return None
        if at.tzinfo is None:
            self.add(name, "must include its offset from UTC (Z or +hh:mm)")
            return None
        return at

    def check(self) -> None:
        """Raise InvalidQuery if anything was wrong."""
        if self.errors:
            raise InvalidQuery(self.errors)
