"""Login, refresh and logout over real HTTP with real PostgreSQL and NATS."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import httpx
import msgspec
import pytest
from argon2 import PasswordHasher, Type

from events.registry import encode
from events.user import UsernameClaimed, UserRegistered, legacy_username_stream, user_stream
from infra.db import make_pool
from infra.settings import Settings
from infra.store import NO_STREAM, EventStore, NewEvent, StreamAppend
from infra.tokens import Tokens
from infra.vault import Vault
from tests.fix_stack import Stack, serve
from tests.integration.test_register_slice import assert_problem
from write_api.app import create_app as write_app
from write_api.throttle import Limit, ThrottlePolicy

pytestmark = pytest.mark.asyncio(loop_scope="session")
PASSWORD = "correct horse battery"


async def new_user(client: httpx.AsyncClient) -> tuple[str, str]:
    name = f"u{uuid.uuid4().hex[:12]}"
    r = await client.post("/v1/auth/register", json={"username": name, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return name, r.json()["user_id"]


async def login(client: httpx.AsyncClient, name: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/v1/auth/login", json={"username": name, "password": password})


async def test_login_refresh_and_reuse_revokes_the_session(stack: Stack) -> None:
    name, user_id = await new_user(stack.write)
    r = await login(stack.write, name)
    assert r.status_code == 200, r.text
    first = r.json()
    assert (
        first["token_type"] == "Bearer"
        and first["expires_in"] == 900
        and r.headers["Cache-Control"] == "no-store"
    )
    assert stack.settings.jwt_secret
    claims = Tokens(stack.settings.jwt_secret).verify(first["access_token"])
    assert claims.user_id == user_id and claims.session_id == first["refresh_token"].split(".")[0]

    r = await stack.write.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (
        Tokens(stack.settings.jwt_secret).verify(second["access_token"]).session_id
        == claims.session_id
    )

    reused = await stack.write.post(
        "/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert_problem(reused, 401, "refresh_token_reused")
    # the whole session is gone: even the newest refresh token no longer works
    after = await stack.write.post(
        "/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert_problem(after, 401, "invalid_refresh_token")


async def test_unknown_user_and_wrong_password_get_the_same_answer(stack: Stack) -> None:
    name, _ = await new_user(stack.write)
    wrong = await login(stack.write, name, "not the password")
    unknown = await login(stack.write, f"nobody{uuid.uuid4().hex[:8]}", "not the password")
    a, b = (
        assert_problem(wrong, 401, "invalid_credentials"),
        assert_problem(unknown, 401, "invalid_credentials"),
    )
    assert a == b


async def test_racing_refreshes_with_one_token_end_the_session(stack: Stack) -> None:
    name, _ = await new_user(stack.write)
    token = (await login(stack.write, name)).json()["refresh_token"]
    responses = await asyncio.gather(
        *(stack.write.post("/v1/auth/refresh", json={"refresh_token": token}) for _ in range(4))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 1 and codes.count(401) == 3, [r.text for r in responses]


async def test_logout_with_the_access_token_or_the_refresh_token(stack: Stack) -> None:
    name, _ = await new_user(stack.write)
    one = (await login(stack.write, name)).json()
    r = await stack.write.post(
        "/v1/auth/logout", headers={"Authorization": f"Bearer {one['access_token']}"}
    )
    assert r.status_code == 204, r.text
    assert_problem(
        await stack.write.post("/v1/auth/refresh", json={"refresh_token": one["refresh_token"]}),
        401,
        "invalid_refresh_token",
    )
    two = (await login(stack.write, name)).json()
    r = await stack.write.post("/v1/auth/logout", json={"refresh_token": two["refresh_token"]})
    assert r.status_code == 204, r.text
    assert_problem(
        await stack.write.post("/v1/auth/refresh", json={"refresh_token": two["refresh_token"]}),
        401,
        "invalid_refresh_token",
    )
    again = await stack.write.post(
        "/v1/auth/logout", headers={"Authorization": f"Bearer {one['access_token']}"}
    )
    assert again.status_code == 204  # logging out twice is fine


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        ("/v1/auth/login", {"json": {}}, 400, "validation_failed"),
        ("/v1/auth/login", {"json": {"username": "", "password": "x"}}, 400, "validation_failed"),
        (
            "/v1/auth/login",
            {"json": {"username": "a", "password": "x" * 257}},
            400,
            "validation_failed",
        ),
        ("/v1/auth/login", {"json": {"username": 5, "password": "x"}}, 400, "validation_failed"),
        (
            "/v1/auth/login",
            {"json": {"username": "a", "password": "x", "remember": True}},
            400,
            "validation_failed",
        ),
        (
            "/v1/auth/login",
            {"content": b"{oops", "headers": {"content-type": "application/json"}},
            400,
            "malformed_json",
        ),
        (
            "/v1/auth/login",
            {"json": {"username": "\u0430nn", "password": "whatever1"}},
            401,
            "invalid_credentials",
        ),
        ("/v1/auth/refresh", {"json": {}}, 400, "validation_failed"),
        ("/v1/auth/refresh", {"json": {"refresh_token": "garbage"}}, 401, "invalid_refresh_token"),
        ("/v1/auth/refresh", {"json": {"refresh_token": "."}}, 401, "invalid_refresh_token"),
        (
            "/v1/auth/refresh",
            {"json": {"refresh_token": f"{uuid.uuid4()}.nope"}},
            401,
            "invalid_refresh_token",
        ),
        ("/v1/auth/refresh", {"json": {"refresh_token": "x" * 600}}, 400, "validation_failed"),
        ("/v1/auth/logout", {}, 401, "unauthorized"),
        (
            "/v1/auth/logout",
            {"headers": {"Authorization": "Bearer not.a.jwt"}},
            401,
            "invalid_token",
        ),
        ("/v1/auth/logout", {"headers": {"Authorization": "Basic abc"}}, 401, "invalid_token"),
        ("/v1/auth/logout", {"json": {"refresh_token": "nope.nope"}}, 401, "invalid_refresh_token"),
    ],
)
async def test_bad_input_on_auth_endpoints(
    stack: Stack, path: str, kwargs: dict[str, object], status: int, code: str
) -> None:
    assert_problem(await stack.write.post(path, **kwargs), status, code)  # type: ignore[arg-type]


async def test_throttling_kicks_in_and_recovers(settings: Settings, stack: Stack) -> None:
    policy = ThrottlePolicy(
        per_username=Limit(failures=3, window_s=2.0), per_address=Limit(failures=1000, window_s=2.0)
    )
    async with (
        serve(write_app(settings, policy)) as url,
        httpx.AsyncClient(base_url=url, timeout=15) as client,
    ):
        name, _ = await new_user(client)
        for _ in range(3):
            assert_problem(await login(client, name, "wrong password"), 401, "invalid_credentials")
        blocked = await login(client, name)  # even the right password waits
        assert_problem(blocked, 429, "too_many_attempts")
        assert 1 <= int(blocked.headers["Retry-After"]) <= 2
        await asyncio.sleep(2.1)
        assert (await login(client, name)).status_code == 200


async def test_login_rehashes_a_password_made_with_other_parameters(stack: Stack) -> None:
    assert stack.settings.database_url
    pool = make_pool(stack.settings.database_url, min_size=1, max_size=2)
    await pool.open()
    try:
        store = EventStore(pool)
        user_id, name = str(uuid.uuid4()), f"old{uuid.uuid4().hex[:8]}"
        weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1, type=Type.ID).hash(
            PASSWORD
        )
        events = [UsernameClaimed(username=name, user_id=user_id),
                  UserRegistered(user_id=user_id, username=name, display_name=name, password_hash=weak, registered_at=datetime.now(UTC))]  # fmt: skip
        appends = []
        for event, stream in zip(
            events, (legacy_username_stream(name), user_stream(user_id)), strict=True
        ):
            type_name, version, data = encode(event)
            appends.append(
                StreamAppend(
                    stream,
                    NO_STREAM,
                    [
                        NewEvent(
                            event_id=uuid.uuid4(),
                            type=type_name,
                            data=data,
                            metadata=b"{}",
                            schema_version=version,
                        )
                    ],
                )
            )
        await store.append(appends)
        assert (await login(stack.write, name)).status_code == 200
        changed = [
            e for e in await store.read_stream(user_stream(user_id)) if e.type == "PasswordChanged"
        ]
        assert len(changed) == 1
        stored = msgspec.json.decode(changed[0].data)["password_hash"]
        assert stored.startswith("sealed:v1:")  # the log holds it under the user's key
        new_hash = await (await Vault.load(pool)).reveal(stored)
        assert new_hash != weak and not PasswordHasher(type=Type.ID).check_needs_rehash(new_hash)
        assert (await login(stack.write, name)).status_code == 200  # and the new hash works
    finally:
        await pool.close()


async def test_me_needs_a_valid_token_and_a_live_session(stack: Stack) -> None:
    name, user_id = await new_user(stack.write)
    tokens = (await login(stack.write, name)).json()
    auth = {
        "Authorization": f"Bearer {tokens['access_token']}",
        "X-Min-Position": tokens["position"],
    }
    me = await stack.read.get("/v1/me", headers=auth)
    assert me.status_code == 200, me.text
    assert me.json() == {"id": user_id, "username": name, "display_name": name, "roles": []}
    assert_problem(await stack.read.get("/v1/me"), 401, "unauthorized")
    assert_problem(
        await stack.read.get("/v1/me", headers={"Authorization": "Bearer x.y.z"}),
        401,
        "invalid_token",
    )
    assert_problem(
        await stack.read.get("/v1/me", headers={"Authorization": tokens["access_token"]}),
        401,
        "invalid_token",
    )

    r = await stack.write.post(
        "/v1/auth/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert r.status_code == 204
    loop = asyncio.get_running_loop()
    revoked_at = loop.time()
    while (await stack.read.get("/v1/me", headers=auth)).status_code == 200:
        assert loop.time() - revoked_at < 1.0, (
            "a revoked session's token still works after a second"
        )
        await asyncio.sleep(0.02)
    assert_problem(await stack.read.get("/v1/me", headers=auth), 401, "session_revoked")


async def test_password_change_revokes_the_other_sessions(stack: Stack) -> None:
    name, _ = await new_user(stack.write)
    here = (await login(stack.write, name)).json()
    there = (await login(stack.write, name)).json()
    # the sessions read model must know both before the change looks for them
    bearer = {"Authorization": f"Bearer {here['access_token']}"}
    assert (
        await stack.read.get("/v1/me", headers={**bearer, "X-Min-Position": there["position"]})
    ).status_code == 200

    new = "a brand new passphrase"
    wrong = await stack.write.put(
        "/v1/me/password", json={"current_password": "nope", "new_password": new}, headers=bearer
    )
    assert_problem(wrong, 403, "wrong_password")
    r = await stack.write.put(
        "/v1/me/password", json={"current_password": PASSWORD, "new_password": new}, headers=bearer
    )
    assert r.status_code == 204, r.text

    assert_problem(
        await stack.write.post("/v1/auth/refresh", json={"refresh_token": there["refresh_token"]}),
        401,
        "invalid_refresh_token",
    )
    assert (
        await stack.write.post("/v1/auth/refresh", json={"refresh_token": here["refresh_token"]})
    ).status_code == 200
    assert_problem(await login(stack.write, name), 401, "invalid_credentials")  # the old password
    assert (await login(stack.write, name, new)).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"current_password": PASSWORD, "new_password": "short"}, 400, "validation_failed"),
        ({"current_password": PASSWORD, "new_password": "x" * 257}, 400, "validation_failed"),
        ({"current_password": PASSWORD}, 400, "validation_failed"),
        ({"current_password": PASSWORD, "new_password": 12345678}, 400, "validation_failed"),
        (
            {"current_password": PASSWORD, "new_password": "long enough", "extra": 1},
            400,
            "validation_failed",
        ),
    ],
)
async def test_bad_password_changes(
    stack: Stack, body: dict[str, object], status: int, code: str
) -> None:
    name, _ = await new_user(stack.write)
    bearer = {"Authorization": f"Bearer {(await login(stack.write, name)).json()['access_token']}"}
    assert_problem(
        await stack.write.put("/v1/me/password", json=body, headers=bearer), status, code
    )
    assert_problem(await stack.write.put("/v1/me/password", json=body), 401, "unauthorized")
