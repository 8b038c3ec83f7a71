"""Access tokens: ours verify; anything forged, stale, misaddressed or malformed does not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from infra.tokens import AUDIENCE, ISSUER, InvalidToken, Tokens

SECRET = "s" * 64  # long enough that forging with HS512 raises no key-length warning
TOKENS = Tokens(SECRET)


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "sid": "session-1", "roles": ["auditor"],
        "jti": "t-1", "iat": now, "nbf": now, "exp": now + 60,
    }  # fmt: skip
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header: dict[str, Any], body: dict[str, Any], key: bytes | None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    signature = (
        b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{b64(signature)}"


def test_our_token_verifies() -> None:
    token, ttl = TOKENS.issue("user-1", "session-1", frozenset({"admin"}))
    verified = TOKENS.verify(token)
    assert (verified.user_id, verified.session_id, verified.roles) == (
        "user-1",
        "session-1",
        frozenset({"admin"}),
    )
    assert ttl == 900 and verified.expires_at - time.time() > 890


def test_alg_none_is_refused() -> None:
    with pytest.raises(InvalidToken):
        TOKENS.verify(hand_signed({"alg": "none", "typ": "JWT"}, claims(), None))


def test_hs_rs_confusion_is_refused() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # An RS256 token (a real signature, by a key we never trusted)
    with pytest.raises(InvalidToken):
        TOKENS.verify(jwt.encode(claims(), private, algorithm="RS256"))
    # and the classic confusion: HS256 keyed with a public key
    with pytest.raises(InvalidToken):
        TOKENS.verify(hand_signed({"alg": "HS256", "typ": "JWT"}, claims(), public_pem))


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_other_hmac_algorithms_with_our_secret_are_refused(algorithm: str) -> None:
    with pytest.raises(InvalidToken):
        TOKENS.verify(jwt.encode(claims(), SECRET, algorithm=algorithm))


def test_bad_signature_is_refused() -> None:
    with pytest.raises(InvalidToken):
        TOKENS.verify(jwt.encode(claims(), "another secret of enough length!!", algorithm="HS256"))
    token, _ = TOKENS.issue("user-1", "session-1", frozenset())
    head, body, sig = token.split(".")
    with pytest.raises(InvalidToken):
        TOKENS.verify(f"{head}.{body}.{sig[:-2]}AA")


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": -60},  # expired (beyond the leeway): seconds from now, see below
        {"nbf": +60},  # not yet valid
        {"aud": "someone-else"},
        {"aud": [AUDIENCE, "someone-else"]},
        {"iss": "evil"},
        {"exp": None},
        {"iat": None},
        {"nbf": None},
        {"aud": None},
        {"iss": None},
        {"sub": None},
        {"jti": None},
        {"sid": None},
        {"roles": None},
        {"roles": ["root"]},
        {"roles": "admin"},
        {"sub": ""},
        {"sid": 7},
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_bad_claims_are_refused(changes: dict[str, Any]) -> None:
    for name in ("exp", "nbf"):  # times are relative to now, not to collection
        if isinstance(changes.get(name), int) and abs(changes[name]) < 3600:
            changes = {**changes, name: int(time.time()) + changes[name]}
    with pytest.raises(InvalidToken):
        TOKENS.verify(jwt.encode(claims(**changes), SECRET, algorithm="HS256"))


@pytest.mark.parametrize(
    "garbage", ["", "abc", "a.b.c", "....", "é.é.é", "x" * 10_000, "Bearer abc"]
)
def test_garbage_is_refused(garbage: str) -> None:
    with pytest.raises(InvalidToken):
        TOKENS.verify(garbage)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        Tokens("short")
