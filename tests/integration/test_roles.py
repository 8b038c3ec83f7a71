"""Roles: the CLI makes the first admin; admins grant and revoke; nobody else can."""

from __future__ import annotations

import uuid

import pytest

from tests.fix_stack import Stack, hubbub
from tests.integration.test_register_slice import assert_problem
from tests.integration.test_sessions import login, new_user

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_first_admin_grants_and_revokes_roles(stack: Stack) -> None:
    admin_name, _ = await new_user(stack.write)
    result = await hubbub(stack, "users", "grant-role", admin_name, "admin")
    assert result.exit_code == 0, result.stderr
    again = await hubbub(stack, "users", "grant-role", admin_name, "admin")
    assert again.exit_code == 0 and "already" in again.stdout
    admin = {
        "Authorization": f"Bearer {(await login(stack.write, admin_name)).json()['access_token']}"
    }

    name, user_id = await new_user(stack.write)
    r = await stack.write.post(
        f"/v1/users/{user_id}/roles", json={"role": "auditor"}, headers=admin
    )
    assert r.status_code == 200, r.text
    tokens = (await login(stack.write, name)).json()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    me = await stack.read.get("/v1/me", headers={**bearer, "X-Min-Position": r.json()["position"]})
    assert me.json()["roles"] == ["auditor"]

    same = await stack.write.post(
        f"/v1/users/{user_id}/roles", json={"role": "auditor"}, headers=admin
    )
    assert same.status_code == 200  # granting a held role changes nothing
    gone = await stack.write.delete(f"/v1/users/{user_id}/roles/auditor", headers=admin)
    assert gone.status_code == 200, gone.text
    me = await stack.read.get(
        "/v1/me", headers={**bearer, "X-Min-Position": gone.json()["position"]}
    )
    assert me.json()["roles"] == []

    roles = f"/v1/users/{user_id}/roles"
    assert_problem(
        await stack.write.post(roles, json={"role": "admin"}, headers=bearer), 403, "forbidden"
    )
    assert_problem(await stack.write.post(roles, json={"role": "admin"}), 401, "unauthorized")
    assert_problem(
        await stack.write.post(roles, json={"role": "root"}, headers=admin),
        400,
        "validation_failed",
    )
    assert_problem(await stack.write.post(roles, json={}, headers=admin), 400, "validation_failed")
    assert_problem(
        await stack.write.post(f"/v1/users/{uuid.uuid4()}/roles", json={"role": "auditor"}, headers=admin),
        404, "user_not_found",
    )  # fmt: skip
    assert_problem(
        await stack.write.post("/v1/users/not-an-id/roles", json={"role": "auditor"}, headers=admin),
        404, "user_not_found",
    )  # fmt: skip
    assert_problem(await stack.write.delete(f"{roles}/root", headers=admin), 422, "unknown_role")


async def test_cli_grant_role_refuses_bad_input(stack: Stack) -> None:
    name, _ = await new_user(stack.write)
    unknown = await hubbub(stack, "users", "grant-role", "nobody-here", "admin")
    assert unknown.exit_code == 2
    assert unknown.stderr.strip().splitlines()[-1] == "hubbub: no user called 'nobody-here'"
    bad_role = await hubbub(stack, "users", "grant-role", name, "root")
    assert bad_role.exit_code == 2 and "no role 'root'" in bad_role.stderr
