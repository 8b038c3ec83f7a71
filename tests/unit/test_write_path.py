"""The pieces of a command's path through the write API that trade generality for speed."""

from __future__ import annotations

import asyncio
import gc
import uuid
from typing import Any

import pytest
from litestar import Litestar, Response, post
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.handlers.base import BaseRouteHandler
from litestar.params import JSONBody
from litestar.testing import TestClient

from infra.http import EXCEPTION_HANDLERS, Answer, Problem, guarding
from write_api.app import fewer_collections
from write_api.combiner import settle
from write_api.handling import path_id


def test_path_id_keeps_canonical_ids_and_canonicalizes_the_rest() -> None:
    canonical = str(uuid.uuid4())
    assert path_id(canonical, "x_not_found", "no such x") == canonical
    assert path_id(canonical.upper(), "x_not_found", "no such x") == canonical
    assert path_id(canonical.replace("-", ""), "x_not_found", "no such x") == canonical
    for bad in ("", "nope", canonical + "0", canonical[:-1] + "g"):
        with pytest.raises(Problem) as raised:
            path_id(bad, "x_not_found", "no such x")
        assert (raised.value.status, raised.value.code) == (404, "x_not_found")


def test_guards_run_before_the_body_is_read_with_the_route_handler() -> None:
    seen: list[str] = []

    def sync_guard(_: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        seen.append(f"sync {handler.handler_name}")

    async def async_guard(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        seen.append(f"async {handler.handler_name}")
        if connection.headers.get("authorization") != "yes":
            raise Problem(401, "unauthorized", "an access token is required")

    @post("/things", status_code=201)
    async def make_thing(data: JSONBody[dict[str, int]]) -> dict[str, int]:
        return data

    app = Litestar(
        route_handlers=[make_thing],
        before_request=guarding([sync_guard, async_guard]),
        exception_handlers=EXCEPTION_HANDLERS,
    )
    with TestClient(app) as client:
        refused = client.post("/things", content=b"{not json")
        assert refused.status_code == 401  # the guard, not the malformed body, answers
        assert refused.json()["code"] == "unauthorized"
        made = client.post("/things", json={"n": 1}, headers={"Authorization": "yes"})
        assert made.status_code == 201 and made.json() == {"n": 1}
    assert seen == ["sync make_thing", "async make_thing"] * 2


def test_a_command_answer_is_what_litestar_would_send() -> None:
    body = {"message_id": str(uuid.uuid4()), "seq": 7, "position": "00ff" * 8}

    @post("/general", status_code=201)
    async def general() -> Response[dict[str, Any]]:
        return Response(body, status_code=201, headers={"X-Position": "00ff" * 8})

    @post("/lean", status_code=201)
    async def lean() -> Response[dict[str, Any]]:
        return Answer(body, status_code=201, headers={"X-Position": "00ff" * 8})

    @post("/lean-with-cookie", status_code=201)
    async def with_cookie() -> Response[dict[str, Any]]:
        return Answer(body, status_code=201, cookies=[Cookie(key="k", value="v")])

    app = Litestar(route_handlers=[general, lean, with_cookie])
    with TestClient(app) as client:
        expected, got = client.post("/general"), client.post("/lean")
        assert (got.status_code, got.content) == (expected.status_code, expected.content)
        assert sorted(got.headers.items()) == sorted(expected.headers.items())
        assert client.post("/lean-with-cookie").cookies["k"] == "v"  # the general path


def test_fewer_collections_while_the_app_runs_then_as_before() -> None:
    before = gc.get_threshold()
    with fewer_collections(12_345):
        assert gc.get_threshold() == (12_345, *before[1:])
    assert gc.get_threshold() == before


def test_settling_a_waiter_gives_its_outcome_and_a_cancellation_is_never_left_unread() -> None:
    """A result, an error or a cancellation reaches a waiting caller as it is; the first
    outcome stays. A cancellation (a flight or lane stopped at shutdown) cancels the
    future, so one whose caller had left is collected without the loop reporting an
    exception nobody retrieved."""
    reported: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reported.append(ctx))
        new = asyncio.get_running_loop().create_future
        done, failed, cancelled, left = new(), new(), new(), new()
        settle(done, 1)
        settle(done, ValueError("late"))
        settle(failed, ValueError("no"))
        settle(cancelled, asyncio.CancelledError())
        assert await done == 1
        with pytest.raises(ValueError):
            await failed
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        settle(left, asyncio.CancelledError())  # nobody awaits it
        del left
        gc.collect()

    asyncio.run(main())
    assert reported == []
