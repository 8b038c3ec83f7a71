"""Where a run happens: a PostgreSQL server (HUBBUB_DATABASE_URL's, or an embedded one under
a temp dir), fresh databases on it that are always dropped, and NATS only when asked for."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from infra.embedded import ServerProcess, create_database, drop_database, start_nats, start_postgres
from infra.settings import Settings


def with_database(url: str, name: str) -> str:
    """The same server and options, another database."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def database_of(url: str) -> str:
    """The database a URL names."""
    return urlsplit(url).path.lstrip("/")


@dataclass(frozen=True)
class Postgres:
    """A server we may create databases on: `admin_url` names a database that exists."""

    admin_url: str
    source: str
    pid: int | None  # the postmaster's, when the server runs on this machine


def local_postmaster(url: str) -> int | None:
    """The postmaster's pid when the server runs on this machine (a backend's parent)."""
    import psutil
    import psycopg

    host = urlsplit(url).hostname or "localhost"
    if host not in ("localhost", "::1") and not host.startswith(("127.", "/")):
        return None
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    try:
        return psutil.Process(int(row[0])).ppid() if row else None
    except psutil.Error:
        return None  # not ours to see: a container, or another host behind the port


@contextlib.contextmanager
def postgres(tmp: Path) -> Iterator[Postgres]:
    """HUBBUB_DATABASE_URL's server, or an embedded one that is stopped on exit."""
    url = os.environ.get("HUBBUB_DATABASE_URL")
    if url:
        yield Postgres(url, "HUBBUB_DATABASE_URL", local_postmaster(url))
        return
    server = start_postgres(tmp / "embedded")
    try:
        admin = with_database(server.url, "postgres")
        yield Postgres(admin, f"embedded, port {server.port}", server.pid)
    finally:
        server.stop()


@contextlib.contextmanager
def fresh_database(admin_url: str, name: str) -> Iterator[str]:
    """Create database `name`, yield its URL, drop it whatever happened."""
    create_database(admin_url, name)
    try:
        yield with_database(admin_url, name)
    finally:
        drop_database(admin_url, name)


class LazyNats:
    """NATS for the workloads that need it: HUBBUB_NATS_URL's, or an embedded server started
    on first use. Each run gets its own JetStream stream and subject prefix, so it never
    meets another run's (or a live Hubbub's) stream on a shared server."""

    def __init__(self, tmp: Path, run_id: str) -> None:
        self.tmp = tmp
        self.stream = f"HUBBUB_BENCH_{run_id.upper()}"
        self.subject_prefix = f"bench{run_id}."
        self._server: ServerProcess | None = None
        self._url: str | None = None
        self._streams = {self.stream}
        self.used = False

    def url(self) -> str:
        """The server's URL, starting the embedded one on first use."""
        if self._url is None:
            self._url = os.environ.get("HUBBUB_NATS_URL") or None
            if self._url is None:
                self._server = start_nats(self.tmp / "embedded")
                self._url = self._server.url
        self.used = True
        return self._url

    @property
    def pid(self) -> int | None:
        """The embedded server's pid, when this run started one (for its CPU time)."""
        return self._server.pid if self._server is not None else None

    def settings(self, database_url: str, scope: str | None = None) -> Settings:
        """Settings naming this run's database, NATS server, stream and subjects. A
        `scope` gets a stream and subjects of its own: a workload whose projector must not
        meet the events another workload published from another database."""
        stream, prefix = self.stream, self.subject_prefix
        if scope is not None:
            stream, prefix = f"{stream}_{scope.upper()}", f"{prefix}{scope}."
            self._streams.add(stream)
        return Settings(
            database_url=database_url,
            nats_url=self.url(),
            data_dir=self.tmp,
            nats_stream=stream,
            subject_prefix=prefix,
        )

    async def delete_stream(self) -> None:
        """Remove this run's streams from a server that outlives the run."""
        if not self.used or self._server is not None or self._url is None:
            return  # never used, or embedded: the server and its store go with the temp dir
        import nats
        from nats.js.errors import NotFoundError

        nc = await nats.connect(self._url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            for stream in sorted(self._streams):
                with contextlib.suppress(NotFoundError):
                    await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    def stop(self) -> None:
        """Stop the embedded server, if this run started one."""
        if self._server is not None:
            self._server.stop()
