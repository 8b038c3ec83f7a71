"""`hubbub`: the command line, and the bootstrap of every process it starts.

Each command reads the settings, configures logging and then imports only what its part
needs, so `hubbub migrate` does not pay for the web stack and a half-written part cannot
break the others' commands.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.table import Table

from infra.embedded import EmbeddedError
from infra.logging import configure_logging
from infra.settings import Settings
from infra.supervisor import (
    EXIT_CONFIG_ERROR,
    Child,
    serve_all,
    start_embedded,
    stop_servers,
    url_env,
)

if TYPE_CHECKING:
    from litestar import Litestar

EXIT_FAILURE = 1

app = typer.Typer(
    name="hubbub",
    help="Hubbub: event-sourced chat and live auctions.",
    no_args_is_help=True,
    add_completion=False,
    # Locals in a traceback may hold the JWT secret or database passwords.
    pretty_exceptions_show_locals=False,
)
projections_app = typer.Typer(help="Inspect and rebuild read models.", no_args_is_help=True)
app.add_typer(projections_app, name="projections")
users_app = typer.Typer(help="Manage accounts.", no_args_is_help=True)
app.add_typer(users_app, name="users")
audit_app = typer.Typer(help="Export and verify the event log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

console = Console()


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print one line on stderr and leave with `code`: no traceback for expected errors."""
    typer.secho(f"hubbub: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def load_settings(service: str) -> Settings:
    """The settings from the environment, with logging configured for `service`."""
    try:
        settings = Settings.from_env()
        configure_logging(settings, service=service)
    except ValueError as e:
        fail(str(e), EXIT_CONFIG_ERROR)
    return settings


def resolve_urls(settings: Settings) -> Settings:
    """Settings with both URLs set, using (or starting) embedded servers for unset ones.

    Servers this process starts are stopped when it exits. The URLs are also exported, so
    code that reads the environment itself (the uvicorn app factories) finds the same ones.
    """
    try:
        resolved, servers = start_embedded(settings)
    except EmbeddedError as e:
        fail(str(e))
    if any(server.process is not None for server in servers):  # started here, not reused
        atexit.register(stop_servers, servers)
        # SIGTERM's default action ends the process on the spot, skipping atexit. Unwind
        # instead: uvicorn, for one, re-raises the SIGTERM it handled once it has shut down.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    os.environ.update(url_env(resolved))
    return resolved


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def reporting_database_errors() -> Iterator[None]:
    """Turn "cannot reach PostgreSQL" into one line instead of a page of traceback."""
    import psycopg
    import sqlalchemy.exc

    try:
        yield
    except (psycopg.OperationalError, sqlalchemy.exc.OperationalError) as e:
        # sqlalchemy wraps psycopg's error and appends its own help link on later lines.
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        fail(f"cannot use PostgreSQL: {reason}")
    except psycopg.errors.UndefinedTable as e:
        fail(f"the database is not migrated ({str(e).splitlines()[0]}): run `hubbub migrate`")


def redact(url: str | None) -> str:
    """A URL fit for the screen: any password replaced by ***."""
    if url is None:
        return "-"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _part(name: str) -> Child:
    # `python -m infra.cli` rather than the `hubbub` script: works without the script on
    # PATH and always runs the interpreter (and venv) of the supervisor.
    return Child(name, [sys.executable, "-m", "infra.cli", name])


def _banner(settings: Settings) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_row("write API", f"http://{settings.host}:{settings.write_api_port}")
    table.add_row("read API", f"http://{settings.host}:{settings.read_api_port}")
    table.add_row("gateway", f"ws://{settings.host}:{settings.gateway_port}/v1/ws")
    table.add_row("PostgreSQL", redact(settings.database_url))
    table.add_row("NATS", redact(settings.nats_url))
    console.print("[bold]Hubbub[/] is starting. Ctrl-C stops everything.")
    console.print(table)


@app.command()
def run() -> None:
    """Start everything: servers (embedded unless URLs are set), migrations, every part."""
    settings = load_settings("supervisor")
    children = [
        _part(name)
        for name in ("write-api", "read-api", "gateway", "relay", "projector", "scheduler")
    ]
    try:
        with reporting_database_errors():
            code = serve_all(settings, children, on_ready=_banner)
    except EmbeddedError as e:
        fail(str(e))
    raise typer.Exit(code)


def serve_http(factory: Callable[[], Litestar], settings: Settings, port: int) -> None:
    """Serve the app `factory` builds on `settings.host`:`port` as every HTTP part is
    served: uvloop, httptools answering in one write, the collector tuned, no access log."""
    import uvicorn

    from infra import heap
    from infra.one_write import OneWriteHttpTools

    heap.tune()
    app = factory()
    # Everything the app built as it started (pools, caches) joins the modules and routes
    # out of the collector's sight.
    app.on_startup.append(lambda _: heap.settle())
    uvicorn.run(
        app,
        host=settings.host,
        port=port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=OneWriteHttpTools,  # uvicorn's httptools protocol, one write a response
        log_config=None,  # keep ours: uvicorn's records go through the structlog renderer
        access_log=False,  # request logging is the apps' job: they know the correlation id
        server_header=False,
        # Finish within the supervisor's 10 s grace period, however long a client waits.
        timeout_graceful_shutdown=5,
    )


@app.command("write-api")
def write_api() -> None:
    """Serve the write API (commands)."""
    settings = resolve_urls(load_settings("write-api"))
    from write_api.app import create_app

    serve_http(create_app, settings, settings.write_api_port)


@app.command("read-api")
def read_api() -> None:
    """Serve the read API (queries over the read models)."""
    settings = resolve_urls(load_settings("read-api"))
    from infra.bootstrap import create_read_api

    serve_http(create_read_api, settings, settings.read_api_port)


@app.command()
def gateway() -> None:
    """Serve the WebSocket gateway (live frames, presence, typing)."""
    settings = resolve_urls(load_settings("gateway"))
    from read_api.gateway.server import main as gateway_main

    run_service(gateway_main(settings))


def run_service(main: Coroutine[Any, Any, None]) -> None:
    """Run a long-lived part on uvloop when installed (5-7% less CPU an event for the
    relay and the projector, measured), its modules out of the collector's sight."""
    from infra import heap

    heap.tune()
    heap.settle()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main)


def _loop_factory() -> Any:
    """uvloop when installed (it comes with uvicorn[standard]): leaner sockets."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


@app.command()
def relay() -> None:
    """Publish stored events on NATS JetStream, in order."""
    settings = resolve_urls(load_settings("relay"))
    from infra.relay import main as relay_main

    run_service(relay_main(settings))


@app.command()
def projector(
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="Run only these projections (repeat, or comma-separate); the others are left"
            " to other projector processes. Default: every one.",
        ),
    ] = None,
) -> None:
    """Keep the read models up to date from JetStream."""
    from projections.runner import main as projector_main
    from projections.runner import selection

    names = [n.strip() for item in only or [] for n in item.split(",") if n.strip()]
    try:
        selection(names)
    except KeyError as e:
        fail(f"no projection called {e.args[0]!r}")
    settings = resolve_urls(load_settings("projector"))
    run_service(projector_main(settings, names))


@app.command()
def scheduler() -> None:
    """Close auctions at their end, exactly once (several may run)."""
    settings = resolve_urls(load_settings("scheduler"))
    from write_api.closer import main as scheduler_main

    run_service(scheduler_main(settings))


@app.command()
def demo(
    url: Annotated[
        str | None, typer.Option(help="The write API (default: this machine's, from settings).")
    ] = None,
) -> None:
    """Make a small world to look at (users, channels, messages, an auction) through the
    write API, which must be running (`hubbub run`)."""
    settings = load_settings("demo")
    from infra.demo import PASSWORD, DemoFailed, seed

    try:
        world = asyncio.run(seed(url or f"http://{settings.host}:{settings.write_api_port}"))
    except DemoFailed as e:
        fail(str(e))
    table = Table("what", "id")
    for username, user_id in world.users.items():
        table.add_row(f"user {username} (password {PASSWORD})", user_id)
    for name, channel_id in world.channels.items():
        table.add_row(f"channel {name}", channel_id)
    table.add_row("auction", world.auction_id)
    console.print(table)
    console.print(f"read with [bold]X-Min-Position: {world.position}[/] to see it all")


@app.command()
def migrate() -> None:
    """Bring the database schemas up to date."""
    settings = resolve_urls(load_settings("migrate"))
    from infra.db import migrate as upgrade

    assert settings.database_url is not None  # resolve_urls fills it in
    with reporting_database_errors():
        upgrade(settings.database_url)
    console.print("[green]migrations applied[/]")


def _lag_seconds(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}"


@projections_app.command("status")
def projections_status() -> None:
    """Show every projection's position and lag behind the event store."""
    settings = resolve_urls(load_settings("projections"))
    from projections.ops import status

    with reporting_database_errors():
        rows: Sequence[Any] = asyncio.run(status(settings))
    table = Table("projection", "lag (events)", "lag (s)", "status", "position", "head")
    for column in table.columns[4:]:
        column.overflow = "fold"  # tokens are 32 characters; show them whole
    for row in rows:
        table.add_row(
            row.name,
            str(row.lag_events),
            _lag_seconds(row.lag_seconds),
            str(row.status),
            str(row.position),
            str(row.head_position),
        )
    console.print(table)


@projections_app.command("rebuild")
def projections_rebuild(
    name: Annotated[str, typer.Argument(help="The projection to rebuild from the first event.")],
) -> None:
    """Rebuild one projection from scratch, showing progress."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    settings = resolve_urls(load_settings("projections"))
    from projections.ops import RebuildBusy, rebuild

    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    try:
        with reporting_database_errors(), progress:
            result = asyncio.run(rebuild(settings, name, progress))
    except KeyError:
        fail(f"unknown projection {name!r}", EXIT_CONFIG_ERROR)
    except RebuildBusy as e:
        fail(str(e))
    console.print(
        f"[green]{name} rebuilt[/]: {result.events} events in {result.seconds:.1f} s"
        f" ({result.rate:,.0f} events/s){', resumed' if result.resumed else ''}"
    )


@contextlib.asynccontextmanager
async def _small_pool(settings: Settings, name: str) -> AsyncIterator[Any]:
    """A small pool for one command, closed when it is done."""
    from infra.db import make_pool

    assert settings.database_url  # resolve_urls fills it in
    pool = make_pool(settings.database_url, min_size=1, max_size=2, name=name)
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close()


@users_app.command("grant-role")
def users_grant_role(
    username: Annotated[str, typer.Argument(help="The user's username.")],
    role: Annotated[str, typer.Argument(help="admin, auditor or operator.")],
) -> None:
    """Grant a role (how the first admin is made)."""
    settings = resolve_urls(load_settings("users"))
    from commands.user import UnknownRole
    from infra.http import Problem
    from infra.store import EventStore
    from infra.vault import Vault
    from write_api.admin import UnknownUser, grant_role

    async def grant() -> object:
        async with _small_pool(settings, "hubbub-cli") as pool:
            store = EventStore(pool, notify=False)
            return await grant_role(store, await Vault.load(pool), username, role)

    try:
        with reporting_database_errors():
            position = asyncio.run(grant())
    except UnknownUser:
        fail(f"no user called {username!r}", EXIT_CONFIG_ERROR)
    except UnknownRole as e:
        fail(str(e), EXIT_CONFIG_ERROR)
    except Problem as e:
        fail(e.detail)
    console.print(f"{username} is {role}" + (" (already was)" if position is None else ""))


@users_app.command("forget")
def users_forget(
    user: Annotated[str, typer.Argument(help="The user's username or id.")],
) -> None:
    """Erase a user's personal data: destroy their key (crypto-shredding) and record
    UserForgotten. The log's hashes still verify; read models show the data as erased."""
    settings = resolve_urls(load_settings("users"))
    from infra.http import Problem
    from infra.store import EventStore
    from infra.vault import Vault
    from write_api.admin import Forgetting, UnknownUser, forget_user

    async def forget() -> Forgetting:
        async with _small_pool(settings, "hubbub-cli") as pool:
            store = EventStore(pool, notify=False)
            return await forget_user(store, await Vault.load(pool), user)

    try:
        with reporting_database_errors():
            done = asyncio.run(forget())
    except UnknownUser:
        fail(f"no user {user!r}", EXIT_CONFIG_ERROR)
    except Problem as e:
        fail(e.detail)
    if done.position is None and not done.key_destroyed:
        console.print(f"user {done.user_id} was already forgotten")
    else:
        console.print(
            f"user {done.user_id} forgotten: key destroyed"
            + (f", UserForgotten at {done.position.token()}" if done.position else ""),
            soft_wrap=True,  # one line, however narrow the terminal: scripts read it
        )


@audit_app.command("replay")
def audit_replay(
    after: Annotated[str | None, typer.Option(help="Start after this position token.")] = None,
    stream: Annotated[str | None, typer.Option(help="Only this stream.")] = None,
    type_: Annotated[
        list[str] | None,
        typer.Option("--type", help="Only these event types (repeat, or comma-separate)."),
    ] = None,
    since: Annotated[str | None, typer.Option(help="Recorded at or after (RFC 3339).")] = None,
    until: Annotated[str | None, typer.Option(help="Recorded before (RFC 3339).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many events.")] = None,
    format_: Annotated[
        str, typer.Option("--format", help="ndjson (envelopes) or cloudevents (CloudEvents 1.0).")
    ] = "ndjson",
) -> None:
    """Events as JSON lines in commit-safe order, up to the head when it starts (constant
    memory): what GET /v1/audit/events streams."""
    settings = resolve_urls(load_settings("audit"))
    from infra.export import ExportQuery, export
    from infra.query import InvalidQuery
    from infra.store import EventStore

    try:
        query = ExportQuery.parse(
            after=after, stream_id=stream, types=type_ or (), since=since, until=until,
            limit=None if limit is None else str(limit), format=format_,
        )  # fmt: skip
    except InvalidQuery as e:
        fail(str(e), EXIT_CONFIG_ERROR)

    async def replay() -> None:
        out = sys.stdout.buffer
        async with _small_pool(settings, "hubbub-audit") as pool:
            async for chunk in await export(EventStore(pool, notify=False), query):
                out.write(chunk)
        out.flush()

    with reporting_database_errors():
        asyncio.run(replay())


@audit_app.command("state")
def audit_state(
    stream: Annotated[str, typer.Argument(help="The stream, e.g. user-<id>, channel-<id>.")],
    at_position: Annotated[
        str | None, typer.Option(help="As of this position token (inclusive).")
    ] = None,
    at_time: Annotated[
        str | None, typer.Option(help="As of this time, RFC 3339 (inclusive).")
    ] = None,
) -> None:
    """An aggregate's state as of a position or a time (default: now), folded with its
    decider's evolve, as JSON: what GET /v1/audit/streams/{id}/state answers."""
    settings = resolve_urls(load_settings("audit"))
    import msgspec

    from infra.bootstrap import AGGREGATES
    from infra.history import AsOf, NoStateModel, UnknownStream, state_at
    from infra.query import InvalidQuery
    from infra.store import EventStore

    try:
        as_of = AsOf.parse(at_position, at_time)
    except InvalidQuery as e:
        fail(str(e), EXIT_CONFIG_ERROR)

    async def fold() -> Any:
        async with _small_pool(settings, "hubbub-audit") as pool:
            return await state_at(EventStore(pool, notify=False), AGGREGATES, stream, as_of)

    try:
        with reporting_database_errors():
            found = asyncio.run(fold())
    except (UnknownStream, NoStateModel) as e:
        fail(str(e))
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(found)) + b"\n")


@audit_app.command("verify")
def audit_verify(
    stream: Annotated[
        str | None, typer.Option(help="Only this stream's chain (not the global one).")
    ] = None,
) -> None:
    """Check every stream's hash chain and the global chain against the relay's anchors."""
    settings = resolve_urls(load_settings("audit"))
    from infra.audit import verify_all, verify_stream
    from infra.store import EventStore

    async def verify() -> Any:
        async with _small_pool(settings, "hubbub-audit") as pool:
            if stream is not None:
                return await verify_stream(EventStore(pool, notify=False), stream)
            return await verify_all(pool)

    with reporting_database_errors():
        verdict = asyncio.run(verify())
    if stream is not None:
        if verdict.events == 0:
            fail(f"stream {stream} has no events")
        if verdict.ok:
            console.print(f"[green]ok[/]: {verdict.events} events, head hash {verdict.head_hash}")
            return
        fail(f"{stream} does not verify at version {verdict.first_bad_version}: {verdict.reason}")
    if verdict.ok:
        console.print(
            f"[green]ok[/]: {verdict.events} events in {verdict.streams} streams,"
            f" {verdict.anchors_checked} relay anchors checked, {verdict.unanchored} not yet anchored"
        )
        return
    where = (
        f" at {verdict.first_bad_stream} version {verdict.first_bad_version}"
        if verdict.first_bad_stream
        else ""
    )
    fail(f"the log does not verify{where}: {verdict.reason}")


def main() -> None:
    """The `hubbub` console script."""
    app(prog_name="hubbub")


if __name__ == "__main__":
    main()
