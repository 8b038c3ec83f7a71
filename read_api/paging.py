"""Keyset pagination (CONTRACT.md: `?limit=1..200&cursor=` -> `{items, next_cursor}`).

A cursor is the sort key of the last item a page returned, as base64url JSON: opaque to
clients, who only send it back. A cursor that does not decode to the key the list sorts by
is a 400, never a 500 or an empty page.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec
from litestar.params import QueryParameter

from infra.http import Problem

# a time in a cursor must say its offset: a naive one would be read in the session's zone
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
Limit = Annotated[int, QueryParameter(ge=1, le=200, description="page size, 1..200")]
DEFAULT_LIMIT = 50

K = TypeVar("K")


def encode_cursor(key: tuple[Any, ...]) -> str:
    """The cursor for a page that ended at sort key `key`."""
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).rstrip(b"=").decode()


def decode_cursor(cursor: str, shape: type[K]) -> K:
    """The sort key in `cursor`, checked against `shape`; 400 `invalid_cursor` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=shape)
    except (binascii.Error, ValueError, msgspec.ValidationError, msgspec.DecodeError,
            RecursionError):  # fmt: skip
        raise Problem(400, "invalid_cursor", "the cursor is not one this list gave out") from None


def page(rows: list[K], limit: int) -> tuple[list[K], bool]:
    """The first `limit` of `rows` (queried with limit + 1), and whether more follow."""
    return rows[:limit], len(rows) > limit
