"""Running a command: idempotency, load -> decide -> append, retries on version conflicts."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from litestar import Response
from uuid_utils.compat import uuid7

from events.envelope import Metadata, Position
from events.registry import decode, encode
from events.user import legacy_username_stream
from infra.http import Answer, Problem
from infra.store import ConcurrencyError, EventStore, Idempotency, NewEvent, StreamAppend
from infra.vault import Vault

S = TypeVar("S")
T = TypeVar("T")
E = TypeVar("E")

MAX_ATTEMPTS = 8
_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True)
class Decision:
    """What a command decided: the appends to make and the response to give (and replay)."""

    appends: Sequence[StreamAppend]
    response: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    response: dict[str, Any]
    position: Position
    replayed: bool = False

    def body(self) -> dict[str, Any]:
        return {**self.response, "position": self.position.token()}


@dataclass(frozen=True)
class IdempotentRequest:
    """An Idempotency-Key and the fingerprint of the request that came with it."""

    scope: str
    key: str
    fingerprint: bytes

    @classmethod
    def of(
        cls, secret: str, scope: str, key: str, method: str, path: str, body: Any
    ) -> IdempotentRequest:
        """Fingerprint with an HMAC: bodies may hold passwords, and the table must not help
        anyone guess them."""
        material = b"\0".join([method.encode(), path.encode(), _ENCODER.encode(body)])
        return cls(scope, key, hmac.new(secret.encode(), material, hashlib.sha256).digest())


_CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def path_id(raw: str, code: str, detail: str) -> str:
    """An id from the path or body, canonical; 404 `code` for anything that is not a UUID
    (an id that cannot exist is as absent as one that does not)."""
    if _CANONICAL_ID.fullmatch(raw):  # already as str(UUID(raw)) would write it
        return raw
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise Problem(404, code, detail) from None


def idempotency_key(raw: str | None) -> str | None:
    """Validate an Idempotency-Key header (1..128 visible ASCII characters)."""
    if raw is None:
        return None
    if not 1 <= len(raw) <= 128 or not raw.isascii() or not raw.isprintable():
        raise Problem(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1..128 visible ASCII characters",
        )
    return raw


def metadata(
    actor_id: str | None,
    correlation_id: str,
    traceparent: str | None,
    idem: IdempotentRequest | None,
) -> bytes:
    """The metadata every event of one command carries."""
    return _ENCODER.encode(
        Metadata(
            actor_id=actor_id,
            correlation_id=correlation_id,
            causation_id=correlation_id,
            traceparent=traceparent,
            idempotency_key=idem.key if idem else None,
        )
    )


def new_events(events: Sequence[msgspec.Struct], meta: bytes) -> list[NewEvent]:
    """Domain events, encoded for the store with fresh UUIDv7 ids."""
    out = []
    for event in events:
        type_name, schema_version, data = encode(event)
        out.append(
            NewEvent(
                event_id=uuid7(),
                type=type_name,
                data=data,
                metadata=meta,
                schema_version=schema_version,
            )
        )
    return out


async def load(
    store: EventStore, stream_id: str, initial: S, evolve: Callable[[S, Any], S]
) -> tuple[S, int]:
    """Fold a stream into state; returns the state and the stream's version."""
    state = initial
    events = await store.read_stream(stream_id)
    for recorded in events:
        state = evolve(state, decode(recorded.type, recorded.schema_version, recorded.data))
    return state, len(events)


def replay(
    stored_hash: bytes | None,
    stored_response: bytes | None,
    position: Position,
    idem: IdempotentRequest,
) -> Outcome:
    if stored_hash is None or not hmac.compare_digest(stored_hash, idem.fingerprint):
        raise Problem(
            422, "idempotency_key_reused", "this Idempotency-Key was used with a different request"
        )
    return Outcome(msgspec.json.decode(stored_response or b"{}"), position, replayed=True)


async def execute(
    store: EventStore, attempt: Callable[[], Awaitable[Decision]], idem: IdempotentRequest | None
) -> Outcome:
    """Run `attempt` (load, decide) and append its decision, at most once per idempotency key.

    A version conflict means someone else wrote first: decide again on the new state, a
    bounded number of times with jittered backoff.
    """

    async def once() -> Outcome:
        if idem is not None:
            stored = await store.find_idempotent(idem.scope, idem.key)
            if stored is not None:
                return replay(stored.stored_hash, stored.stored_response, stored.position, idem)
        decision = await attempt()
        if not decision.appends:
            # Nothing to do (already so): answer with where the log is; nothing to replay.
            return Outcome(decision.response, await store.head())
        record = (
            Idempotency(
                scope=idem.scope, key=idem.key, request_hash=idem.fingerprint,
                response=_ENCODER.encode(decision.response),
            )
            if idem is not None
            else None
        )  # fmt: skip
        result = await store.append(decision.appends, idempotency=record)
        if result.duplicate:
            assert idem is not None
            return replay(result.stored_hash, result.stored_response, result.position, idem)
        return Outcome(decision.response, result.position)

    return await retrying(once)


async def retrying(once: Callable[[], Awaitable[T]], *, busy: str = "the resource") -> T:
    """Run `once` (load, decide, append) again whenever its append met a version conflict:
    someone else wrote first, so decide again on the new state. A bounded number of times,
    with jittered backoff; then 409 too_much_contention."""
    for n in range(MAX_ATTEMPTS):
        try:
            return await once()
        except ConcurrencyError:
            await asyncio.sleep(random.uniform(0, 0.002 * 2**n))
    raise Problem(
        409, "too_much_contention", f"{busy} is too busy; try again", headers={"Retry-After": "1"}
    )


async def user_id_of(store: EventStore, vault: Vault, username: str) -> str | None:
    """The id of the user who claimed `username` (its guard stream's first event), if any.
    A name claimed before guards were keyed sits in a clear-text guard stream."""
    guard = await store.read_stream(vault.username_stream(username), limit=1)
    if not guard:
        guard = await store.read_stream(legacy_username_stream(username), limit=1)
    if not guard:
        return None
    user_id: str = msgspec.json.decode(guard[0].data)["user_id"]
    return user_id


def answer(outcome: Outcome, status: int) -> Response[dict[str, Any]]:
    return Answer(
        outcome.body(), status_code=status, headers={"X-Position": outcome.position.token()}
    )
