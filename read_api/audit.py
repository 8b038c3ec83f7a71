"""Audit views for the auditor role, straight from the event store (no read model): the
export, a stream's verification, and an aggregate's state as of a position or a time.

The export is streamed: its parameters are checked, and the head of the log read, before
the first byte, so a bad request is a 400 problem; after that a failure can only cut the
stream short (the last complete line's `position` is where to resume with `after`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream

from infra.audit import verify_stream
from infra.authz import Action
from infra.export import FORMATS, ExportQuery, export
from infra.history import AsOf, NoStateModel, UnknownStream, state_at
from infra.http import Problem
from infra.query import InvalidQuery
from read_api.services import Services

NDJSON = "application/x-ndjson"
_EXPORT_PARAMETERS = frozenset({"after", "stream_id", "type", "since", "until", "limit", "format"})

Token = Annotated[str | None, QueryParameter(description="a position token")]
Time = Annotated[str | None, QueryParameter(description="RFC 3339 date-time with offset")]


def _invalid(e: InvalidQuery) -> Problem:
    return Problem(
        400,
        "validation_failed",
        "the query is not valid",
        errors=[{"field": name, "message": message} for name, message in e.errors],
    )


@get(
    "/v1/audit/events",
    tags=["audit"],
    summary="Export the event log (NDJSON, in commit-safe order)",
    opt={"action": Action.AUDIT},
    media_type=NDJSON,
)
async def export_events(
    request: Request[Any, Any, Any],
    services: NamedDependency[Services],
    after: Token = None,
    stream_id: Annotated[str | None, QueryParameter(description="only this stream")] = None,
    types: Annotated[
        list[str] | None,
        QueryParameter(name="type", description="event types; repeat or comma-separate"),
    ] = None,
    since: Time = None,
    until: Time = None,
    limit: Annotated[str | None, QueryParameter(description="at most this many events")] = None,
    format: Annotated[str | None, QueryParameter(description=", ".join(FORMATS))] = None,
) -> Stream:
    """One JSON line per event after `after`, up to the head of the log when the request
    arrived: the envelope (`format=ndjson`, the default) or CloudEvents 1.0 JSON
    (`format=cloudevents`). `since` is inclusive and `until` exclusive, on `recorded_at`."""
    unknown = sorted(set(request.query_params) - _EXPORT_PARAMETERS)
    if unknown:
        raise Problem(400, "unknown_parameter", f"unknown query parameter(s): {', '.join(unknown)}")
    try:
        query = ExportQuery.parse(
            after=after, stream_id=stream_id, types=types or (), since=since, until=until,
            limit=limit, format=format,
        )  # fmt: skip
    except InvalidQuery as e:
        raise _invalid(e) from None
    chunks = await export(services.store, query)
    return Stream(chunks, media_type=NDJSON, headers={"Cache-Control": "no-store"})


@get(
    "/v1/audit/streams/{stream_id:str}/verify",
    tags=["audit"],
    summary="Verify one stream's hash chain",
    opt={"action": Action.AUDIT},
)
async def verify(stream_id: FromPath[str], services: NamedDependency[Services]) -> dict[str, Any]:
    """`{stream_id, ok, events, head_hash, first_bad_version, reason}`: `events` counts
    the events checked (up to the first bad one). 404 for a stream with no events: a
    stream deleted whole is found by `hubbub audit verify`, which checks the global chain."""
    verdict = await verify_stream(services.store, stream_id)
    if verdict.events == 0:
        raise Problem(404, "stream_not_found", f"stream {stream_id} has no events")
    return {"stream_id": stream_id, **asdict(verdict)}


@get(
    "/v1/audit/streams/{stream_id:str}/state",
    tags=["audit"],
    summary="An aggregate's state as of a position or a time",
    opt={"action": Action.AUDIT},
)
async def state(
    stream_id: FromPath[str],
    services: NamedDependency[Services],
    at_position: Token = None,
    at_time: Time = None,
) -> Response[Any]:
    """`{stream_id, version, position, recorded_at, state}` after folding the stream's
    events up to `at_position` or recorded up to `at_time` (inclusive; neither: now) with
    the decider's evolve. Version 0: the stream had no event yet then. 404 for a stream with
    no events, 422 `no_state_model` for a category no decider folds (`username-...`)."""
    try:
        as_of = AsOf.parse(at_position, at_time)
    except InvalidQuery as e:
        raise _invalid(e) from None
    try:
        found = await state_at(services.store, services.aggregates, stream_id, as_of)
    except UnknownStream as e:
        raise Problem(404, "stream_not_found", str(e)) from None
    except NoStateModel as e:
        raise Problem(422, "no_state_model", str(e)) from None
    return Response(found)
