"""PostgreSQL plumbing: connection pools with Hubbub's type adapters, and migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from psycopg.adapt import Loader
from psycopg.types.numeric import Int8BinaryLoader, IntLoader
from psycopg.types.string import ByteaBinaryLoader, BytesBinaryDumper
from psycopg_pool import AsyncConnectionPool

XID8_OID = 5069
JSON_OID = 114


class _RawJsonLoader(Loader):
    """Keep json columns as the exact bytes stored: hashes are computed over them."""

    def load(self, data: Any) -> bytes:
        return bytes(data)


def configure(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Register Hubbub's loaders on a connection (or its adapters map).

    - xid8 as a Python int, by psycopg's C loaders for integers: as text (decimal) and as
      binary (8 bytes, read signed: a value needs 2**31 transaction-ID wraparounds to pass
      2**63). A loader written in Python cost 1.1 us a value against 0.17.
    - json as the exact bytes stored (hashes are computed over them). In binary results a
      json value is its text, and bytea's C loader hands it over unchanged; text results
      go through `_RawJsonLoader`, 0.8-0.95 us a value against 0.15-0.2 binary.
    """
    conn.adapters.register_loader(XID8_OID, IntLoader)
    conn.adapters.register_loader(XID8_OID, Int8BinaryLoader)
    conn.adapters.register_loader(JSON_OID, _RawJsonLoader)
    conn.adapters.register_loader(JSON_OID, ByteaBinaryLoader)
    # A binary COPY of bytea columns (the store's batched appends) picks its dumper by the
    # type's oid, where psycopg's last registered is dbapi20's Binary wrapper: a Python
    # subclass of the C dumper, 1.3 us a value more. The C one, for the oid only.
    conn.adapters.register_dumper(None, BytesBinaryDumper)


async def _configure_async(conn: psycopg.AsyncConnection[Any]) -> None:
    configure(conn)


def make_pool(
    url: str, *, min_size: int = 2, max_size: int = 16, name: str = "hubbub"
) -> AsyncConnectionPool:
    """An async pool in autocommit mode: each statement is its own transaction unless the
    caller opens one with `conn.transaction()`."""
    return AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True, "application_name": name},
        configure=_configure_async,
        open=False,
        name=name,
    )


def sqlalchemy_url(url: str) -> str:
    """The same database for SQLAlchemy (alembic), through psycopg 3."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database's schemas (event store and read models) up to `revision`."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    command.upgrade(cfg, revision)
