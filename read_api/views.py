"""How read-model values become JSON: ids as strings, times in UTC (CONTRACT.md)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime


def utc(at: datetime | None) -> datetime | None:
    """`at` in UTC, whatever time zone the database session uses."""
    return at.astimezone(UTC) if at is not None else None


def text_id(value: uuid.UUID | None) -> str | None:
    """A uuid column as the string clients see."""
    return str(value) if value is not None else None


def parse_id(value: str) -> uuid.UUID | None:
    """A path id as a UUID; None when it is not one (callers answer 404, not 400)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
