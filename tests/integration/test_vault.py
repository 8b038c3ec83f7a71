"""The vault against a real PostgreSQL: keys made once, even by racing first uses."""

from __future__ import annotations

import asyncio
import uuid

from psycopg_pool import AsyncConnectionPool

from infra.vault import ForgottenUser, Vault


async def test_racing_first_seals_share_one_key(pool: AsyncConnectionPool) -> None:
    users = [str(uuid.uuid4()) for _ in range(30)]
    # separate vaults: no shared cache hides the race on the key's insert
    vaults = [await Vault.load(pool) for _ in range(5)]
    sealed = await asyncio.gather(*(v.seal(u, f"hello {u}") for u in users for v in vaults))
    reader = await Vault.load(pool)
    opened = [await reader.reveal(value) for (value,) in sealed]
    assert opened == [f"hello {u}" for u in users for _ in vaults]
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM user_keys")
        assert await cur.fetchone() == (30,)


async def test_a_forgotten_user_gets_no_new_key(pool: AsyncConnectionPool) -> None:
    vault, other = await Vault.load(pool), await Vault.load(pool)
    user = str(uuid.uuid4())
    (value,) = await vault.seal(user, "before")
    assert await vault.forget(user) is True
    assert await vault.forget(user) is False  # already gone
    assert await other.reveal(value) == "[erased]"
    try:
        await other.seal(user, "after")
    except ForgottenUser as e:
        assert e.user_id == user
    else:
        raise AssertionError("a forgotten user's values were sealed")
    never = str(uuid.uuid4())  # forgotten before any key was made: none ever will be
    assert await vault.forget(never) is False
    try:
        await other.seal(never, "x")
    except ForgottenUser:
        pass
    else:
        raise AssertionError("a key was made for a forgotten user")
