"""Session-wide servers for the tests: real PostgreSQL and NATS.

- HUBBUB_DATABASE_URL / HUBBUB_NATS_URL set: those servers (a fresh database and fresh
  JetStream stream names are made on them for this run, and removed afterwards).
- Otherwise, with HUBBUB_TEST_DOCKER=1 (where a Docker engine runs): testcontainers.
- Otherwise (the default, so a fresh laptop works): embedded servers from the wheels, in a
  temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import nats
import psycopg
import pytest
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool

from infra.db import make_pool, migrate
from infra.embedded import ServerProcess, create_database, drop_database, start_nats, start_postgres
from infra.settings import Settings

RUN_ID = uuid.uuid4().hex[:10]


@dataclass(frozen=True)
class Servers:
    """Where this test run's servers are, and its own names on them."""

    admin_url: str  # the server's maintenance database
    nats_url: str
    data_dir: Path

    def database_url(self, name: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{name}"


def _admin_url(url: str) -> str:
    base, _, _ = url.partition("?")[0].rpartition("/")
    return f"{base}/postgres"


@contextlib.contextmanager
def _containers(stack: contextlib.ExitStack) -> Iterator[tuple[str, str]]:
    """PostgreSQL and NATS (JetStream) in Docker, through testcontainers."""
    from testcontainers.community.nats import NatsContainer
    from testcontainers.community.postgres import PostgresContainer

    pg = stack.enter_context(
        PostgresContainer(
            "postgres:15", username="postgres", password="postgres", dbname="postgres", driver=None
        )
    )
    nats = stack.enter_context(NatsContainer("nats:2.10", jetstream=True))
    yield pg.get_connection_url(), nats.nats_uri()


@contextlib.contextmanager
def _servers() -> Iterator[Servers]:
    data_dir = Path(tempfile.mkdtemp(prefix=f"hubbub-test-{RUN_ID}-"))
    started: list[ServerProcess] = []
    containers = contextlib.ExitStack()
    try:
        db_url = os.environ.get("HUBBUB_DATABASE_URL")
        nats_url = os.environ.get("HUBBUB_NATS_URL")
        if os.environ.get("HUBBUB_TEST_DOCKER") == "1" and not (db_url or nats_url):
            db_url, nats_url = containers.enter_context(_containers(containers))
        if not db_url:
            pg = start_postgres(data_dir / "servers", database="postgres")
            started.append(pg)
            db_url = pg.url
        if not nats_url:
            nats = start_nats(data_dir / "servers")
            started.append(nats)
            nats_url = nats.url
        yield Servers(admin_url=_admin_url(db_url), nats_url=nats_url, data_dir=data_dir)
    finally:
        for server in reversed(started):
            server.stop()
        containers.close()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    with _servers() as s:
        yield s
        asyncio.run(_delete_streams(s.nats_url, stream_prefix()))


def stream_prefix() -> str:
    """Every JetStream stream this run creates starts with this."""
    return f"HUBBUB_T{RUN_ID}".upper()


async def _delete_streams(nats_url: str, prefix: str) -> None:
    """Leave a shared NATS server as we found it."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(prefix):
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


@pytest.fixture(scope="session")
def template_db(servers: Servers) -> Iterator[str]:
    """A migrated database that per-test databases are cloned from."""
    name = f"hubbub_test_{RUN_ID}_tpl"
    create_database(servers.admin_url, name)
    migrate(servers.database_url(name))
    yield name
    drop_database(servers.admin_url, name)


def _clone(servers: Servers, template: str, name: str) -> str:
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return servers.database_url(name)


@pytest.fixture(scope="session")
def database_url(servers: Servers, template_db: str) -> Iterator[str]:
    """This run's shared database (tests that share it use their own stream ids)."""
    name = f"hubbub_test_{RUN_ID}"
    url = _clone(servers, template_db, name)
    yield url
    drop_database(servers.admin_url, name)


@pytest.fixture
def fresh_database_url(servers: Servers, template_db: str) -> Iterator[str]:
    """A database of this test's own, for tests that read the whole log."""
    name = f"hubbub_test_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    url = _clone(servers, template_db, name)
    yield url
    drop_database(servers.admin_url, name)


def make_settings(servers: Servers, database_url: str, tmp_path: Path) -> Settings:
    """Settings for processes of this test: its database, its own JetStream names."""
    tag = uuid.uuid4().hex[:8]
    return replace(
        Settings.from_env(),
        database_url=database_url,
        nats_url=servers.nats_url,
        data_dir=tmp_path,
        nats_stream=f"{stream_prefix()}_{tag}".upper(),
        subject_prefix=f"t{RUN_ID}{tag}.",
        jwt_secret=f"test-secret-{RUN_ID}-" + "k" * 32,
    )


@pytest.fixture
def settings(servers: Servers, fresh_database_url: str, tmp_path: Path) -> Settings:
    """Settings on a fresh database with fresh stream names."""
    return make_settings(servers, fresh_database_url, tmp_path)


@pytest_asyncio.fixture
async def pool(fresh_database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    p = make_pool(fresh_database_url, min_size=2, max_size=20)
    await p.open()
    yield p
    await p.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def shared_pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    p = make_pool(database_url, min_size=2, max_size=20)
    await p.open()
    yield p
    await p.close()
