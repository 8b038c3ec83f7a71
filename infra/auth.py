"""Authentication for every service: a bearer access token, verified, from a session that
has not been revoked, becomes a Principal."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection

from infra.http import Problem
from infra.tokens import AccessClaims, InvalidToken, Tokens


@dataclass(frozen=True)
class Principal:
    """Who is asking."""

    user_id: str
    session_id: str
    roles: frozenset[str]

    def has(self, role: str) -> bool:
        return role in self.roles


class Authenticator:
    """Bearer token -> Principal, or 401 problem+json.

    A client sends the same access token with every request for its whole life, so tokens
    verified once are remembered (the exact string, bounded, oldest dropped first): the
    signature and claims are checked once, expiry and revocation on every request.
    """

    def __init__(self, tokens: Tokens, revoked: Container[str], *, remember: int = 10_000) -> None:
        self.tokens = tokens
        self.revoked = revoked
        self.remember = remember
        self._verified: OrderedDict[str, AccessClaims] = OrderedDict()

    def _claims(self, token: str) -> AccessClaims:
        claims = self._verified.get(token)
        if claims is None:
            claims = self.tokens.verify(token)
            self._verified[token] = claims
            if len(self._verified) > self.remember:
                self._verified.popitem(last=False)
        elif claims.expires_at <= time.time():
            del self._verified[token]
            raise InvalidToken("expired")
        return claims

    def principal(self, request: ASGIConnection[Any, Any, Any, Any]) -> Principal:
        """The caller; 401 when the token is missing, invalid, expired or revoked."""
        header = request.headers.get("authorization")
        if not header:
            raise Problem(401, "unauthorized", "an access token is required",
                          headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(401, "invalid_token", "Authorization must be 'Bearer <access token>'",
                          headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        try:
            claims = self._claims(token.strip())
        except InvalidToken as e:
            raise Problem(401, "invalid_token", "the access token is not valid",
                          headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from e  # fmt: skip
        if claims.session_id in self.revoked:
            raise Problem(401, "session_revoked", "this session has ended; sign in again",
                          headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})  # fmt: skip
        return Principal(claims.user_id, claims.session_id, claims.roles)
