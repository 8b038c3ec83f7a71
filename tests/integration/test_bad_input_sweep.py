"""Every operation of both APIs, as their OpenAPI documents describe them, fed bad input.

The per-endpoint tests check the refusals a client is promised. This sweep checks the
promise under them, for every operation at once, including ones added later: whatever a
client sends (broken or hostile JSON, wrong types, huge or odd path and query values,
malformed headers), the answer is never a 5xx, and every 4xx is problem+json with a
stable code. Each operation is first called with real ids the caller may see (a channel
they own, a message in it, an auction they opened), so that the bad values reach past the
404s into validation and the deciders.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from infra.http import holds_nul
from infra.store import EventStore
from tests.fix_chat import User, create_channel, say, users
from tests.fix_stack import Stack
from tests.integration.test_auctions import list_auction

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Values a JSON field or a parameter may be given instead of what it wants.
NASTY_VALUES: list[Any] = [
    None, True, 0, -1, 2**63, -(2**63) - 1, 10**400, 1e308, 0.5, "", " ", "x" * 5000,
    "\u0000", "\U0001f600" * 100, "\ud800", "../../etc/passwd", "' OR 1=1 --", [], [1, "a"], {},
    {"a": {"b": None}},
]  # fmt: skip
# Raw bodies, each sent as application/json.
RAW_BODIES: list[bytes] = [
    b"", b"{", b"null", b"[]", b"123", b'"x"', b"\xff\xfe\xfd", b"{}", b'{"a": NaN}',
    b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"x": "' + b"y" * (1024 * 1024 + 1) + b'"}',
]  # fmt: skip
NASTY_IDS = ["x", "-1", "0", "9" * 40, str(uuid.uuid4()), "%00", "a" * 1000, "%F0%28%8C%28",
             "..%2F..%2F", "null"]  # fmt: skip
NASTY_HEADERS: list[dict[str, str]] = [
    {"Authorization": "Bearer"}, {"Authorization": "Bearer x.y.z"},
    {"Authorization": "Basic dXNlcjpwYXNz"}, {"X-Min-Position": "garbage"},
    {"X-Min-Position": "-1:-1"}, {"X-Min-Position": "9" * 40 + ":1"}, {"X-Wait-Ms": "-5"},
    {"X-Wait-Ms": "1e9"}, {"Idempotency-Key": ""}, {"Idempotency-Key": "k" * 5000},
    {"If-None-Match": "\"" * 300}, {"Accept": "text/html"},
]  # fmt: skip


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "oneOf" in schema or "anyOf" in schema:
        options = [_resolve(doc, s) for s in schema.get("oneOf", schema.get("anyOf", []))]
        return next((o for o in options if o.get("type") != "null"), options[0] if options else {})
    return schema


def plausible(doc: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> Any:
    """A value of the schema's shape, as a well-meaning client might send it."""
    schema = _resolve(doc, schema)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        if depth > 4:
            return {}
        return {name: plausible(doc, prop, depth + 1)
                for name, prop in schema.get("properties", {}).items()}  # fmt: skip
    if kind == "array":
        return [plausible(doc, schema.get("items", {}), depth + 1)]
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return False
    if schema.get("format") == "uuid":
        return str(uuid.uuid4())
    return "x" * max(1, int(schema.get("minLength", 1)))


def body_schema(operation: dict[str, Any]) -> dict[str, Any] | None:
    """The schema of the operation's request body, if it takes one."""
    content = operation.get("requestBody", {}).get("content", {})
    schema: dict[str, Any] | None = next(iter(content.values()), {}).get("schema")
    return schema


def bodies(doc: dict[str, Any], operation: dict[str, Any]) -> Iterator[bytes]:
    """Raw bad bodies, then the plausible body with one field at a time made nasty."""
    yield from RAW_BODIES
    schema = body_schema(operation)
    if schema is None:
        return
    base = plausible(doc, schema)
    if not isinstance(base, dict):
        return
    yield json.dumps(base).encode()
    for name in base:
        for value in NASTY_VALUES:
            yield json.dumps({**base, name: value}).encode()
    yield json.dumps({**base, "unexpected_field": 1}).encode()


# Reads first, then writes, and last the operations that end what the others use (the
# caller's channel, auction and session), so that those reach past the 404s.
_ORDER = {"get": 0, "post": 1, "put": 1, "patch": 1, "delete": 3}
_ENDINGS = ("/cancel", "/leave", "/logout", "/buy-now", "/roles")


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = [(method.upper(), path, operation)
             for path, item in doc["paths"].items()
             for method, operation in item.items() if method in _ORDER]  # fmt: skip
    return sorted(found, key=lambda o: _ORDER[o[0].lower()] + o[1].endswith(_ENDINGS))


def fill(path: str, ids: dict[str, str], default: str) -> str:
    """The path with each {param} replaced: a known id for its name, else `default`."""
    out = path
    for part in path.split("{")[1:]:
        name = part.split("}", 1)[0]
        key = name.split(":", 1)[0]
        out = out.replace("{" + name + "}", ids.get(key, default))
    return out


def check(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400 and response.status_code != 405:
        assert response.headers.get("content-type", "").startswith("application/problem+json"), (
            f"{what}: {response.status_code} {response.headers.get('content-type')}"
        )
        problem = response.json()
        assert isinstance(problem.get("code"), str) and problem["code"], f"{what}: {problem}"
        assert problem.get("status") == response.status_code, f"{what}: {problem}"


async def sweep(
    client: httpx.AsyncClient, doc: dict[str, Any], caller: User, ids: dict[str, str]
) -> int:
    sent = 0
    for method, path, operation in operations(doc):
        if path.startswith("/schema") or path.startswith("/health") or path == "/metrics":
            continue
        query = [p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"]
        real = fill(path, ids, str(uuid.uuid4()))
        attempts: list[tuple[str, dict[str, str], bytes | None, dict[str, str]]] = []
        for bad_id in NASTY_IDS:
            attempts.append((fill(path, {}, bad_id), {}, None, caller.headers))
        for name, value in itertools.product(query, NASTY_VALUES):
            if value != "\ud800":  # a lone surrogate has no UTF-8 form to put in a URL
                attempts.append((real, {name: str(value)[:2000]}, None, caller.headers))
        for extra in NASTY_HEADERS:
            attempts.append((real, {}, None, {**caller.headers, **extra}))
        if method in {"POST", "PUT", "PATCH"}:
            attempts.extend((real, {}, body, caller.headers) for body in bodies(doc, operation))
        for url, params, body, headers in attempts:
            what = f"{method} {url[:120]} params={params!r:.80} body={(body or b'')[:80]!r}"
            response = await client.request(
                method, url, params=params, content=body,
                headers={**headers, "Content-Type": "application/json"} if body is not None
                else headers,
            )  # fmt: skip
            check(response, what)
            sent += 1
    return sent


async def test_no_operation_answers_bad_input_with_a_5xx_or_a_bare_error(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    store = EventStore(pool)
    (owner,) = await users(stack, store, 1, roles=frozenset({"admin", "auditor", "operator"}))
    channel = await create_channel(stack.write, owner)
    message = (await say(stack.write, channel, owner, "hello"))["message_id"]
    auction = await list_auction(stack, owner)
    ids = {"channel_id": channel, "message_id": message, "user_id": owner.id,
           "auction_id": auction}  # fmt: skip
    await caught_up(stack, store)  # the reads start where the caller's things are visible
    sent = 0
    for client in (stack.write, stack.read):
        doc = (await client.get("/schema/openapi.json")).json()
        sent += await sweep(client, doc, owner, ids)
    # Every operation was reached with many requests (a sweep that sent nothing proves nothing).
    assert sent > 2000, sent
    # What the sweep got accepted is in the log: every projection must still apply all of
    # it (an event no projection can store would stop its read model for good).
    await caught_up(stack, store)


async def caught_up(stack: Stack, store: EventStore) -> None:
    """Wait until every projection has applied the whole log."""
    head = await store.head()
    for _ in range(600):
        if min(stack.runner.checkpoints.values()) >= head:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"projections stuck below {head}: {stack.runner.checkpoints}")


@pytest.mark.parametrize(
    ("body", "holds"),
    [
        (b'{"text": "a\\u0000b"}', True),
        (b'{"text": "a\\\\u0000b"}', False),  # an escaped backslash, then the letters u0000
        (b'{"text": "a\\\\\\u0000b"}', True),  # an escaped backslash, then a NUL
        (b'{"text": "\\\\u0000", "t": "\\u0000"}', True),
        (b'{"text": "u0000 \\u0001"}', False),
    ],
)
async def test_a_nul_is_found_only_where_json_escapes_one(body: bytes, holds: bool) -> None:
    assert holds_nul(body) is holds
    decoded = json.loads(body)
    assert any("\x00" in str(v) for v in decoded.values()) is holds


async def test_a_nul_is_refused_at_the_door_and_the_letters_u0000_are_not(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    (owner,) = await users(stack, EventStore(pool), 1)
    channel = await create_channel(stack.write, owner)
    url = f"/v1/channels/{channel}/messages"
    headers = {**owner.headers, "Content-Type": "application/json"}
    for body in (b'{"text": "a\\u0000b"}', b'{"text": "\\\\\\u0000"}'):
        refused = await stack.write.post(url, content=body, headers=headers)
        assert refused.status_code == 400 and refused.json()["code"] == "validation_failed"
        assert refused.json()["errors"][0]["field"] == "text", refused.text
    for depth in (300, 600, 900):  # decodable, but perhaps too deep to walk for the NUL
        deep = b'{"text": "x", "a": ' + b'{"a": ' * depth + b'"\\u0000"' + b"}" * (depth + 1)
        refused = await stack.write.post(url, content=deep, headers=headers)
        assert refused.status_code == 400, (depth, refused.text)
    sent = await stack.write.post(url, content=b'{"text": "say \\\\u0000"}', headers=headers)
    assert sent.status_code == 201, sent.text
    page = await stack.read.get(
        url, params={"after": sent.json()["seq"] - 1, "limit": 1},
        headers={**owner.headers, "X-Min-Position": sent.json()["position"]},
    )  # fmt: skip
    assert page.json()["items"][0]["text"] == "say \\u0000"
    refused = await stack.read.get(f"{url}?limit=5&after=%00", headers=owner.headers)
    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "after"
    # In the path it names nothing, like any other id that names nothing.
    missing = await stack.read.get(f"/v1/channels/{channel}%00/messages", headers=owner.headers)
    assert missing.status_code == 404


async def test_no_operation_shows_or_touches_a_private_channel_to_an_outsider(
    stack: Stack, pool: AsyncConnectionPool
) -> None:
    """Object-level authorization, for every operation that names a channel, including
    ones added later: to someone outside a private channel, every operation answers as it
    does for a channel that does not exist (same status, same code), and none succeeds."""
    store = EventStore(pool)
    owner, outsider = await users(stack, store, 2)
    channel = await create_channel(stack.write, owner, visibility="private")
    message = (await say(stack.write, channel, owner, "secret"))["message_id"]
    await caught_up(stack, store)
    private = {"channel_id": channel, "message_id": message, "emoji": "x"}
    missing = {"channel_id": str(uuid.uuid4()), "message_id": str(uuid.uuid4()), "emoji": "x"}
    checked = 0
    for client in (stack.read, stack.write):
        doc = (await client.get("/schema/openapi.json")).json()
        for method, path, operation in operations(doc):
            if "{channel_id" not in path:
                continue
            bodies: list[bytes | None] = [None]
            if method in {"POST", "PUT", "PATCH"}:
                schema = body_schema(operation)
                full = plausible(doc, schema) if schema else {}
                # every field, then the required ones only (an optional field's own check,
                # such as a reply_to that names nothing, must not be all a caller sees)
                required = set(_resolve(doc, schema).get("required", [])) if schema else set()
                bodies = [json.dumps(full).encode(),
                          json.dumps({k: v for k, v in full.items() if k in required}).encode()]  # fmt: skip
            headers = {**outsider.headers, "Content-Type": "application/json"}
            for body in bodies:
                answers = []
                for ids in (private, missing):
                    url = fill(path, ids, "")
                    r = await client.request(method, url, content=body, headers=headers)
                    check(r, f"{method} {path}")
                    answers.append((r.status_code, r.json().get("code") if r.content else None))
                seen, unseen = answers
                what = f"{method} {path} {body!r:.60}"
                assert not 200 <= seen[0] < 300, f"{what} as an outsider: {seen}"
                assert seen == unseen, f"{what}: private {seen}, missing {unseen}"
                checked += 1
    assert checked >= 10, checked
    # and the owner still sees it all: the refusals were about the caller, not the channel
    r = await stack.read.get(f"/v1/channels/{channel}/messages", headers=owner.headers)
    assert r.status_code == 200 and [m["text"] for m in r.json()["items"]] == ["secret"]
