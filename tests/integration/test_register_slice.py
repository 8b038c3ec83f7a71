"""The vertical slice: POST /v1/auth/register -> UserRegistered -> users read model ->
GET /v1/users/{id}, over real HTTP, PostgreSQL and NATS."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import psycopg
import pytest

from tests.fix_stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


def username() -> str:
    return f"u{uuid.uuid4().hex[:12]}"


async def event_count(stack: Stack) -> int:
    assert stack.settings.database_url
    async with await psycopg.AsyncConnection.connect(stack.settings.database_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM events")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = response.json()
    assert body["code"] == code and body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body


async def test_register_then_read_your_write(stack: Stack) -> None:
    name = username()
    r = await stack.write.post(
        "/v1/auth/register",
        json={"username": name, "password": "correct horse", "display_name": "Ann"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["X-Position"] == body["position"]
    uuid.UUID(body["user_id"])
    got = await stack.read.get(
        f"/v1/users/{body['user_id']}", headers={"X-Min-Position": body["position"]}
    )
    assert got.status_code == 200, got.text
    assert got.json()["username"] == name and got.json()["display_name"] == "Ann"
    assert "password" not in got.text and "argon2" not in got.text
    assert got.headers["X-Projection-Position"] >= body["position"]


async def test_username_taken_is_409_and_appends_nothing(stack: Stack) -> None:
    name = username()
    assert (
        await stack.write.post("/v1/auth/register", json={"username": name, "password": "12345678"})
    ).status_code == 201
    before = await event_count(stack)
    again = await stack.write.post(
        "/v1/auth/register", json={"username": name, "password": "other-pass"}
    )
    assert_problem(again, 409, "username_taken")
    assert await event_count(stack) == before


async def test_racing_registrations_for_one_username_exactly_one_wins(stack: Stack) -> None:
    import asyncio

    name = username()
    responses = await asyncio.gather(
        *(
            stack.write.post(
                "/v1/auth/register", json={"username": name, "password": f"password{i}"}
            )
            for i in range(6)
        )
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * 5


async def test_idempotency_key_replays_and_refuses_another_body(stack: Stack) -> None:
    name = username()
    key = str(uuid.uuid4())
    payload = {"username": name, "password": "12345678"}
    first = await stack.write.post(
        "/v1/auth/register", json=payload, headers={"Idempotency-Key": key}
    )
    before = await event_count(stack)
    second = await stack.write.post(
        "/v1/auth/register", json=payload, headers={"Idempotency-Key": key}
    )
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert await event_count(stack) == before
    other = await stack.write.post(
        "/v1/auth/register",
        json={**payload, "password": "87654321"},
        headers={"Idempotency-Key": key},
    )
    assert_problem(other, 422, "idempotency_key_reused")
    bad = await stack.write.post(
        "/v1/auth/register",
        json={"username": username(), "password": "12345678"},
        headers={"Idempotency-Key": "x" * 129},
    )
    assert_problem(bad, 400, "invalid_idempotency_key")


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b'{"username": "abc", "password": ', "malformed_json"),
        (b"not json at all", "malformed_json"),
        (b'{"username": 5, "password": "12345678"}', "validation_failed"),
        (b'{"username": "abc", "password": "12345678", "admin": true}', "validation_failed"),
        (b'{"username": "ab", "password": "12345678"}', "validation_failed"),
        (b'{"username": "ABC", "password": "12345678"}', "validation_failed"),
        (
            '{"username": "\u0430bc", "password": "12345678"}'.encode(),
            "validation_failed",
        ),  # Cyrillic a
        (b'{"username": "abc\\u0000", "password": "12345678"}', "validation_failed"),
        (b'{"username": "abc", "password": "short"}', "validation_failed"),
        (b'{"username": "abc", "password": "' + b"p" * 257 + b'"}', "validation_failed"),
        (b'{"password": "12345678"}', "validation_failed"),
        (b"[]", "validation_failed"),
        (b"", "validation_failed"),
    ],
)
async def test_bad_register_bodies_are_4xx_problems_and_append_nothing(
    stack: Stack, content: bytes, code: str
) -> None:
    before = await event_count(stack)
    r = await stack.write.post(
        "/v1/auth/register", content=content, headers={"content-type": "application/json"}
    )
    body = assert_problem(r, 400, code)
    if code == "validation_failed" and content not in (b"", b"[]"):
        assert body.get("errors"), body
    assert await event_count(stack) == before


async def test_oversized_body_is_413(stack: Stack) -> None:
    before = await event_count(stack)
    big = b'{"username": "abc", "password": "' + b"x" * (1_048_576 + 10) + b'"}'
    r = await stack.write.post(
        "/v1/auth/register", content=big, headers={"content-type": "application/json"}
    )
    assert_problem(r, 413, "body_too_large")
    assert await event_count(stack) == before


async def test_read_side_errors(stack: Stack) -> None:
    assert_problem(await stack.read.get(f"/v1/users/{uuid.uuid4()}"), 404, "user_not_found")
    assert_problem(await stack.read.get("/v1/users/not-a-uuid"), 404, "user_not_found")
    assert_problem(
        await stack.read.get(f"/v1/users/{uuid.uuid4()}", headers={"X-Min-Position": "zz"}),
        400,
        "invalid_position",
    )
    far = "7" * 32
    r = await stack.read.get(
        f"/v1/users/{uuid.uuid4()}", headers={"X-Min-Position": far, "X-Wait-Ms": "100"}
    )
    assert_problem(r, 503, "not_yet_consistent")
    assert r.headers["Retry-After"] == "1"
    assert_problem(
        await stack.read.get(
            f"/v1/users/{uuid.uuid4()}", headers={"X-Min-Position": far, "X-Wait-Ms": "99999"}
        ),
        400,
        "invalid_wait",
    )


@pytest.mark.parametrize("side", ["write", "read"])
async def test_health_metrics_and_openapi(stack: Stack, side: str) -> None:
    client = stack.write if side == "write" else stack.read
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    for _ in range(100):  # NATS attaches in the background: not ready until it has
        ready = await client.get("/health/ready")
        if ready.status_code == 200:
            break
        assert ready.status_code == 503 and ready.json()["checks"]["postgres"] == "ok"
        await asyncio.sleep(0.05)
    assert ready.status_code == 200 and ready.json()["checks"] == {"postgres": "ok", "nats": "ok"}
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200 and "hubbub_http_request_seconds" in metrics.text
    schema = (await client.get("/schema/openapi.json")).json()
    assert schema["openapi"].startswith("3.")
    assert ("/v1/auth/register" if side == "write" else "/v1/users/{user_id}") in schema["paths"]
    assert_problem(await client.get("/no/such/path"), 404, "not_found")
