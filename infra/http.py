"""What every Hubbub HTTP service shares: problem+json errors, health, metrics, request
context (correlation id, traceparent) and the limits on request bodies."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, unquote_to_bytes

import msgspec
import structlog
from litestar import Litestar, MediaType, Request, Response, Router, get
from litestar.di import Provide
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.response.base import ASGIResponse
from litestar.types import ASGIApp, Guard, Receive, Scope, Send
from nats.aio.client import Client as NATS
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Histogram, generate_latest
from psycopg_pool import AsyncConnectionPool
from uuid_utils import uuid4

from infra.db import make_pool
from infra.nats import connect
from infra.settings import Settings

T = TypeVar("T")
_ENCODER = msgspec.json.Encoder()

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
MAX_BODY_BYTES = 1_048_576
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_CORRELATION = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

REQUEST_SECONDS = Histogram(
    "hubbub_http_request_seconds",
    "HTTP request latency",
    ["service", "method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
COMMAND_SECONDS = Histogram(
    "hubbub_command_seconds",
    "Commands (the write API's POST, PUT, PATCH and DELETE routes) by command and outcome:"
    " ok, the problem's code (bid_too_low, ...), or conflict (too_much_contention)",
    ["command", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
COMMAND_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _ProblemCode(msgspec.Struct):
    code: str = ""


_PROBLEM_CODE = msgspec.json.Decoder(_ProblemCode)


def command_outcome(status: int, body: bytes) -> str:
    """A command's outcome label: ok, its problem's stable code, or conflict (it lost the
    race for its stream too many times). Codes are a closed set, so the label stays small."""
    if status < 400:
        return "ok"
    try:
        code = _PROBLEM_CODE.decode(body).code
    except msgspec.DecodeError:
        code = ""
    if code == "too_much_contention":
        return "conflict"
    return code or _STATUS_CODES.get(status, "error" if status >= 500 else "bad_request")


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    503: "unavailable",
}


class Problem(Exception):
    """An error the client should see as RFC 9457 problem+json with a stable code."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        errors: Sequence[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or code.replace("_", " ").capitalize()
        self.errors = list(errors) if errors else None
        self.headers = headers or {}
        self.extra = extra


def problem_response(p: Problem) -> Response[dict[str, Any]]:
    """The problem+json response for `p`."""
    body: dict[str, Any] = {
        "type": f"https://hubbub.dev/problems/{p.code}",
        "title": p.title,
        "status": p.status,
        "detail": p.detail,
        "code": p.code,
        **p.extra,
    }
    if p.errors is not None:
        body["errors"] = p.errors
    return Response(body, status_code=p.status, media_type=PROBLEM_JSON, headers=p.headers)


async def strictly(request: Request[Any, Any, Any], body: T) -> T:
    """The request's body decoded again, strictly: Litestar converts leniently (the string
    "100" passes as the integer 100), which money must never do. 400 validation_failed
    names the field."""
    try:
        return msgspec.json.decode(await request.body(), type=type(body))
    except msgspec.ValidationError as e:
        message = str(e)
        field = message.rpartition("at `$.")[2].rstrip("`") if "at `$." in message else ""
        raise Problem(400, "validation_failed", "the request is not valid",
                      errors=[{"field": field, "message": message}]) from None  # fmt: skip


def _on_problem(_: Request[Any, Any, Any], exc: Problem) -> Response[dict[str, Any]]:
    return problem_response(exc)


def _on_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            errors.append(
                {"field": str(item.get("key", "")), "message": str(item.get("message", ""))}
            )
    detail = "the request is not valid" if errors else str(exc.detail)
    if not errors and "JSON" in str(exc.detail):
        return problem_response(Problem(400, "malformed_json", "the body is not valid JSON"))
    return problem_response(Problem(400, "validation_failed", detail, errors=errors))


def _on_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    code = _STATUS_CODES.get(status, "error" if status >= 500 else "bad_request")
    detail = str(exc.detail)
    if isinstance(exc.__cause__, SerializationException):
        code, detail = "malformed_json", f"the body is not valid JSON: {detail}"
    if status == 413:
        detail = f"the body is larger than {MAX_BODY_BYTES} bytes"
    return problem_response(Problem(status, code, detail, headers=dict(exc.headers or {})))


def _too_deep() -> Problem:
    """A body nested deeper than it can be decoded or walked: the client's, not our bug."""
    return Problem(400, "malformed_json", "the body is nested too deeply")


def _on_recursion(request: Request[Any, Any, Any], exc: RecursionError) -> Response[dict[str, Any]]:
    # msgspec refuses JSON nested deeper than it can decode (about a thousand levels) with
    # this message. Any other RecursionError is ours.
    if "while deserializing" in str(exc):
        return problem_response(_too_deep())
    return _on_unexpected(request, exc)


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error", path=request.url.path, error=repr(exc))
    return problem_response(Problem(500, "internal_error", "something went wrong on our side"))


EXCEPTION_HANDLERS: dict[
    int | type[Exception], Callable[[Request[Any, Any, Any], Any], Response[Any]]
] = {
    Problem: _on_problem,
    ValidationException: _on_validation,
    HTTPException: _on_http,
    RecursionError: _on_recursion,
    Exception: _on_unexpected,
}


class RequestContext(ASGIMiddleware):
    """Binds a correlation id and traceparent to the request's logs, and times it; with
    `commands`, its POST, PUT, PATCH and DELETE requests are timed as commands too."""

    def __init__(self, service: str, *, commands: bool = False) -> None:
        self.service = service
        self.commands = commands
        # Each request's series, found once: `labels()` costs as much as the observation.
        self._series: dict[tuple[Histogram, tuple[str, ...]], Any] = {}

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        correlation = traceparent = ""
        for name, value in scope.get("headers", ()):
            name = name.lower()
            if name == b"x-correlation-id":
                correlation = value.decode("latin-1")
            elif name == b"traceparent":
                traceparent = value.decode("latin-1")
        if not _CORRELATION.match(correlation):
            correlation = str(uuid4())
        trace = traceparent if _TRACEPARENT.match(traceparent) else None
        state = scope.setdefault("state", {})
        state["correlation_id"] = correlation
        state["traceparent"] = trace
        status = 500
        method = str(scope.get("method", ""))
        timed_command = self.commands and method in COMMAND_METHODS
        problem_body = b""
        correlation_header = (b"x-correlation-id", correlation.encode())

        async def send_wrapper(message: Any) -> None:
            nonlocal status, problem_body
            if message["type"] == "http.response.body":
                if timed_command and status >= 400 and not problem_body:
                    problem_body = message.get("body", b"")
            elif message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), correlation_header]
            await send(message)

        if trace:
            structlog.contextvars.bind_contextvars(correlation_id=correlation, traceparent=trace)
        else:
            structlog.contextvars.bind_contextvars(correlation_id=correlation)
        started = time.perf_counter()
        try:
            await next_app(scope, receive, send_wrapper)
        finally:
            structlog.contextvars.unbind_contextvars("correlation_id", "traceparent")
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            self._series_of(REQUEST_SECONDS, self.service, method, route, str(status)).observe(
                elapsed
            )
            if timed_command:
                outcome = command_outcome(status, problem_body)
                self._series_of(COMMAND_SECONDS, f"{method} {route}", outcome).observe(elapsed)

    def _series_of(self, metric: Histogram, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once per distinct labels."""
        key = (metric, labels)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metric.labels(*labels)
        return series


def correlation_of(request: Request[Any, Any, Any]) -> tuple[str, str | None]:
    """The request's correlation id and its W3C traceparent, if it sent a valid one."""
    state = request.scope.get("state", {})
    return state.get("correlation_id") or str(uuid4()), state.get("traceparent")


Check = Callable[[], Awaitable[None]]


class Connected(Protocol):
    """What a service's readiness is made of: its PostgreSQL pool and NATS connection."""

    @property
    def links(self) -> Links: ...


def readiness_checks(services: Connected) -> dict[str, Check]:
    """The readiness of CONTRACT.md: PostgreSQL answers, NATS is connected."""

    async def postgres() -> None:
        async with services.links.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")

    async def nats() -> None:
        nc = services.links.nats
        if nc is None or not nc.is_connected:
            raise ConnectionError("nats is not connected")

    return {"postgres": postgres, "nats": nats}


@contextlib.asynccontextmanager
async def connections(settings: Settings, name: str) -> AsyncIterator[Links]:
    """A service's PostgreSQL pool and NATS connection for the life of the app.

    NATS is not needed to serve (only readiness reports it), so it is connected in the
    background and retried until it answers; the app starts either way.
    """
    assert settings.database_url, "set HUBBUB_DATABASE_URL (the CLI does it for embedded servers)"
    pool = make_pool(settings.database_url, min_size=2, max_size=16, name=name)
    await pool.open()
    links = Links(pool)

    async def attach() -> None:
        delay = 0.5
        while settings.nats_url:
            try:
                links.nats = await connect(settings.nats_url, name=name)
                return
            except Exception as e:  # nats-py raises a variety; readiness shows the state
                log.warning("nats not reachable yet", error=repr(e))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    attaching = asyncio.create_task(attach())
    try:
        yield links
    finally:
        attaching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await attaching
        if links.nats is not None:
            with contextlib.suppress(Exception):
                await links.nats.close()
        await pool.close()


@dataclass
class Links:
    """A service's connections; `nats` is None until it has connected."""

    pool: AsyncConnectionPool
    nats: NATS | None = None


def service_app(
    *,
    service: str,
    title: str,
    route_handlers: Sequence[Any],
    lifespan: Callable[[Litestar], contextlib.AbstractAsyncContextManager[None]],
    provide_services: Callable[..., Any],
    exception_handlers: dict[
        int | type[Exception], Callable[[Request[Any, Any, Any], Any], Response[Any]]
    ]
    | None = None,
    dependencies: dict[str, Provide] | None = None,
    guards: Sequence[Guard] = (),
    command_metrics: bool = False,
) -> Litestar:
    """A Hubbub HTTP service: its routes plus health and metrics, problem+json errors,
    request context, the body limit and the OpenAPI document at /schema/openapi.json.
    The lifespan must put an object with `links` (from `connections`) at
    `app.state.services`. With `command_metrics`, its POST, PUT, PATCH and DELETE requests
    are counted and timed as commands (hubbub_command_seconds)."""
    http = [h for h in route_handlers if isinstance(h, HTTPRouteHandler)]
    others = [h for h in route_handlers if not isinstance(h, HTTPRouteHandler)]
    return Litestar(
        route_handlers=[
            Router(path="/", route_handlers=http, before_request=guarding(guards)),
            *([Router(path="/", route_handlers=others, guards=list(guards))] if others else []),
            *health_handlers(lambda app: readiness_checks(app.state.services)),
        ],
        dependencies={
            "services": Provide(provide_services, sync_to_thread=False),
            **(dependencies or {}),
        },
        lifespan=[lifespan],
        exception_handlers={**EXCEPTION_HANDLERS, **(exception_handlers or {})},
        middleware=[RequestContext(service, commands=command_metrics)],
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # infra.logging configures the process
        openapi_config=OpenAPIConfig(title=title, version="1.0.0", path="/schema"),
    )


class _Encoded(ASGIResponse):
    """A finished answer: status, encoded headers and body, sent as they are."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        # Not ASGIResponse.__init__: its header multimap and checks are what this saves.
        self.status_code = status
        self.body = body
        self.raw_headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})  # fmt: skip
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


class Answer(Response[dict[str, Any]]):
    """A JSON answer for the busiest routes. Litestar's general response machinery (header
    multimaps, cookies, background tasks, HEAD) cost a tenth of a send's CPU; a small dict
    and a header or two need none of it, unless a route adds some."""

    def to_asgi_response(
        self, app: Any, request: Any, *, background: Any = None, cookies: Any = None,
        encoded_headers: Any = None, headers: dict[str, str] | None = None,
        is_head_response: bool = False, media_type: Any = None, status_code: int | None = None,
        type_encoders: Any = None,
    ) -> ASGIResponse:  # fmt: skip
        status = self.status_code or status_code
        if (background or cookies or encoded_headers or headers or is_head_response
                or self.background or self.cookies or status is None
                or (media_type or self.media_type or MediaType.JSON) != MediaType.JSON):  # fmt: skip
            return super().to_asgi_response(
                app, request, background=background, cookies=cookies,
                encoded_headers=encoded_headers, headers=headers,
                is_head_response=is_head_response, media_type=media_type,
                status_code=status_code, type_encoders=type_encoders,
            )  # fmt: skip
        body = _ENCODER.encode(self.content)
        return _Encoded(status, [
            (b"content-type", b"application/json"),
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()),
            (b"content-length", str(len(body)).encode()),
        ], body)  # fmt: skip


def guarding(guards: Sequence[Guard]) -> Callable[[Request[Any, Any, Any]], Awaitable[None]]:
    """A before-request hook that runs `guards` on the request's route handler, as
    Litestar's guards would (first thing, before the body is read or dependencies are
    resolved; what they raise is answered by the exception handlers). Litestar itself
    copies the route handler for every guard of every request: a twentieth of a send's
    CPU. Ours never change the handler they are shown. Then, for a request the guards let
    through, `refuse_nul`."""

    async def run(request: Request[Any, Any, Any]) -> None:
        handler = request.scope["route_handler"]
        for guard in guards:
            checked = guard(request, handler)
            if inspect.isawaitable(checked):
                await checked
        await refuse_nul(request)

    return run


_NUL_ESCAPE = b"\\u0000"
_NUL_REFUSED = "text may not contain the NUL character (\\u0000)"


def holds_nul(body: bytes) -> bool:
    """Whether a JSON text holds a NUL character. JSON can only carry one escaped, as
    `\\u0000`; `\\\\u0000` is an escaped backslash followed by the letters u0000."""
    at = body.find(_NUL_ESCAPE)
    while at != -1:
        backslashes = 0
        while at - backslashes > 0 and body[at - backslashes - 1] == 0x5C:
            backslashes += 1
        if backslashes % 2 == 0:
            return True
        at = body.find(_NUL_ESCAPE, at + 1)
    return False


def _nul_fields(value: Any, at: str = "") -> Iterator[str]:
    """The fields of a decoded JSON value whose text (or name) holds a NUL."""
    if isinstance(value, str):
        if "\x00" in value:
            yield at
    elif isinstance(value, dict):
        for key, item in value.items():
            here = f"{at}.{key}" if at else str(key)
            if "\x00" in key:
                yield here
            yield from _nul_fields(item, here)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _nul_fields(item, f"{at}[{i}]")


async def refuse_nul(request: Request[Any, Any, Any]) -> None:
    """Refuse a NUL character before it reaches PostgreSQL, which cannot store one in text:
    taken in, it would fail the request with a 500, or worse, sit in an event that every
    projection then fails to apply. In a JSON body or the query: 400 naming the fields. In
    the path: 404, as for any other id that names nothing."""
    scope = request.scope
    if "\x00" in scope["path"]:
        raise Problem(404, "not_found", "no such resource")
    query = scope["query_string"]
    if b"%00" in query and b"\x00" in unquote_to_bytes(query):
        raise Problem(400, "validation_failed", _NUL_REFUSED, errors=[
            {"field": name, "message": _NUL_REFUSED}
            for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            if "\x00" in name + value
        ])  # fmt: skip
    if request.method in COMMAND_METHODS:
        body = await request.body()
        if holds_nul(body):
            try:
                fields = list(_nul_fields(msgspec.json.decode(body)))
            except msgspec.DecodeError:
                fields = []  # not JSON after all: the handler says so
            except RecursionError:  # too deep for msgspec, or for the walk through it
                raise _too_deep() from None
            if fields:
                raise Problem(400, "validation_failed", _NUL_REFUSED,
                              errors=[{"field": f, "message": _NUL_REFUSED} for f in fields])  # fmt: skip


def health_handlers(checks: Callable[[Litestar], dict[str, Check]]) -> list[Any]:
    """GET /health/live, /health/ready (runs every check) and /metrics."""

    @get("/health/live", include_in_schema=False, sync_to_thread=False, opt={"public": True})
    def live() -> dict[str, str]:
        return {"status": "ok"}

    @get("/health/ready", include_in_schema=False, opt={"public": True})
    async def ready(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        results: dict[str, str] = {}
        for name, check in checks(request.app).items():
            try:
                await check()
                results[name] = "ok"
            except Exception as e:  # a readiness probe reports, never raises
                results[name] = f"failing: {type(e).__name__}"
        ok = all(v == "ok" for v in results.values())
        return Response(
            {"status": "ok" if ok else "unavailable", "checks": results},
            status_code=200 if ok else 503,
        )

    @get("/metrics", include_in_schema=False, sync_to_thread=False, opt={"public": True})
    def metrics() -> Response[bytes]:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return [live, ready, metrics]


__all__ = ["MAX_BODY_BYTES", "MediaType", "Problem"]
