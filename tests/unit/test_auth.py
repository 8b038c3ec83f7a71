"""The Authenticator: bearer tokens to principals, remembered but never past expiry or revocation."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import jwt
import pytest

from infra.auth import Authenticator
from infra.http import Problem
from infra.tokens import AUDIENCE, ISSUER, Tokens

SECRET = "k" * 64


def request(authorization: str | None) -> Any:
    return SimpleNamespace(headers={"authorization": authorization} if authorization else {})


def code_of(auth: Authenticator, header: str | None) -> str:
    with pytest.raises(Problem) as info:
        auth.principal(request(header))
    assert info.value.status == 401
    return info.value.code


def test_a_good_token_is_a_principal_every_time() -> None:
    revoked: set[str] = set()
    auth = Authenticator(Tokens(SECRET), revoked)
    token, _ = Tokens(SECRET).issue("u1", "s1", frozenset({"operator"}))
    for _ in range(3):
        principal = auth.principal(request(f"Bearer {token}"))
        assert (principal.user_id, principal.session_id, principal.roles) == (
            "u1",
            "s1",
            frozenset({"operator"}),
        )
    revoked.add("s1")  # remembered tokens still meet the revocation list
    assert code_of(auth, f"Bearer {token}") == "session_revoked"


def test_a_remembered_token_still_expires() -> None:
    auth = Authenticator(Tokens(SECRET), set())
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u1", "sid": "s1", "roles": [], "jti": "j",
              "iat": now, "nbf": now, "exp": now + 1}  # fmt: skip
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    auth.principal(request(f"Bearer {token}"))
    time.sleep(1.1)
    assert code_of(auth, f"Bearer {token}") == "invalid_token"


def test_missing_and_malformed_headers() -> None:
    auth = Authenticator(Tokens(SECRET), set())
    assert code_of(auth, None) == "unauthorized"
    assert code_of(auth, "Basic dXNlcjpwYXNz") == "invalid_token"
    assert code_of(auth, "Bearer") == "invalid_token"
    assert code_of(auth, "Bearer not-a-token") == "invalid_token"


def test_memory_is_bounded() -> None:
    auth = Authenticator(Tokens(SECRET), set(), remember=5)
    for i in range(20):
        token, _ = Tokens(SECRET).issue(f"u{i}", f"s{i}", frozenset())
        auth.principal(request(f"Bearer {token}"))
    assert len(auth._verified) == 5
