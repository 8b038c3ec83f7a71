"""Access tokens: short-lived JWTs, issued by the write API and checked by every service.

HS256 only, from an explicit list: a token naming any other algorithm (`none`, RS256 with
our secret as a public key, HS512, ...) is refused before its signature is looked at.
Every claim a decision rests on is required: exp, iat, nbf, aud, iss, sub, jti, sid
(the session, so revoking it reaches every process) and roles.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

import jwt

ALGORITHMS: Final = ["HS256"]
ISSUER: Final = "hubbub"
AUDIENCE: Final = "hubbub-api"
ACCESS_TTL_S: Final = 900
ROLES: Final = frozenset({"admin", "auditor", "operator"})
_REQUIRED: Final = ["exp", "iat", "nbf", "aud", "iss", "sub", "jti", "sid", "roles"]
_LEEWAY_S: Final = 5  # clocks of processes on one machine agree; a little slack, no more


class InvalidToken(Exception):
    """The token cannot be trusted; `reason` says why (for logs, not for clients)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AccessClaims:
    """What a verified access token says about its bearer."""

    user_id: str
    session_id: str
    roles: frozenset[str]
    token_id: str
    expires_at: int


class Tokens:
    """Issues and verifies access tokens with one secret."""

    def __init__(self, secret: str, *, ttl_s: int = ACCESS_TTL_S) -> None:
        if len(secret.encode()) < 32:
            raise ValueError("the JWT secret must be at least 32 bytes")
        self._secret = secret
        self.ttl_s = ttl_s

    def issue(
        self, user_id: str, session_id: str, roles: frozenset[str], *, now: float | None = None
    ) -> tuple[str, int]:
        """A signed access token and its lifetime in seconds."""
        issued = int(now if now is not None else time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user_id,
            "sid": session_id,
            "roles": sorted(roles),
            "jti": str(uuid.uuid4()),
            "iat": issued,
            "nbf": issued,
            "exp": issued + self.ttl_s,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHMS[0]), self.ttl_s

    def verify(self, token: str) -> AccessClaims:
        """The claims of a token we issued and that is valid now; InvalidToken otherwise."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=ALGORITHMS,
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=_LEEWAY_S,
                options={"require": _REQUIRED, "strict_aud": True},
            )
        except jwt.PyJWTError as e:
            raise InvalidToken(type(e).__name__) from e
        roles = claims["roles"]
        if not isinstance(roles, list) or not all(isinstance(r, str) and r in ROLES for r in roles):
            raise InvalidToken("bad roles claim")
        for name in ("sub", "sid", "jti"):
            if not isinstance(claims[name], str) or not claims[name]:
                raise InvalidToken(f"bad {name} claim")
        return AccessClaims(
            user_id=claims["sub"],
            session_id=claims["sid"],
            roles=frozenset(roles),
            token_id=claims["jti"],
            expires_at=int(claims["exp"]),
        )
