"""The domain's one exception base: every business rule a command breaks."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A command that the rules refuse. `code` is the stable problem+json code."""

    code: str = "rejected"
    status: int = 409

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
