"""Crypto-shredding: personal fields are sealed with their subject's own key, and forgetting
a user destroys the key.

The event log is never rewritten (its hashes cover every byte), so erasure cannot delete
personal data from it; instead that data is only ever stored sealed (AES-256-GCM, a fresh
nonce per value, the subject's id as associated data so a value cannot be moved to another
user). Destroying the key leaves the ciphertext, and the hashes over it, intact and
unreadable. Which fields are personal is events.personal's business; this module holds the
keys, seals, opens and forgets.

A sealed value is a string `sealed:v1:<subject id>:<base64url(nonce + ciphertext)>`, so it
fits any `str` field and says whose key opens it. Values written before sealing existed are
plain strings and are read as they are.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Sequence
from typing import Any, Final
from uuid import UUID

import msgspec
import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg_pool import AsyncConnectionPool

from events.envelope import Envelope
from events.personal import ERASED, PERSONAL
from events.user import username_stream

PREFIX: Final = "sealed:v1:"
_NONCE = 12
# How long a process trusts a key it looked up. A user forgotten meanwhile can have values
# sealed for up to this long with the destroyed key: those are unreadable at once, so the
# window costs nothing but the writes themselves.
KEY_TTL_S: Final = 60.0


class VaultError(Exception):
    """Base of what the vault raises."""


class ForgottenUser(VaultError):
    """The user was forgotten: nothing may be sealed for them any more."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id} was forgotten")
        self.user_id = user_id


def seal_with(key: bytes, subject: str, value: str) -> str:
    """`value` sealed with `key` for `subject` (pure but for the random nonce)."""
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(key).encrypt(nonce, value.encode(), subject.encode())
    return f"{PREFIX}{subject}:{base64.urlsafe_b64encode(nonce + sealed).rstrip(b'=').decode()}"


def subject_of(value: str) -> str | None:
    """The subject whose key opens a sealed value; None for a plain (or malformed) value."""
    if not value.startswith(PREFIX):
        return None
    subject, colon, _ = value[len(PREFIX) :].partition(":")
    return subject if colon and _is_uuid(subject) else None


def open_with(key: bytes | None, value: str) -> str:
    """The clear text of a sealed value; ERASED when its key is gone (or the value is not
    what its key sealed); a plain value as it is."""
    subject = subject_of(value)
    if subject is None:
        return value
    if key is None:
        return ERASED
    body = value[len(PREFIX) + len(subject) + 1 :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        return AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], subject.encode()).decode()
    except (ValueError, InvalidTag):
        return ERASED


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


_KEYS_OF = "SELECT user_id::text, key FROM user_keys WHERE user_id = ANY(%s::uuid[])"
_KEY_FOR = (
    "WITH made AS (INSERT INTO user_keys (user_id, key) VALUES (%s, %s)"
    " ON CONFLICT (user_id) DO NOTHING RETURNING key)"
    " SELECT key FROM made UNION ALL SELECT key FROM user_keys WHERE user_id = %s LIMIT 1"
)


async def keys_of(
    conn: psycopg.AsyncConnection[Any], subjects: set[str]
) -> dict[str, bytes | None]:
    """The live keys of `subjects` (a forgotten or unknown subject has none), read on the
    caller's connection so a projection sees the keys as of its own batch."""
    cur = await conn.execute(_KEYS_OF, (sorted(subjects),))
    return {
        user_id: (bytes(key) if key is not None else None) for user_id, key in await cur.fetchall()
    }


class KeyCache:
    """Keys a reader of the log has looked up, so that a batch of events whose subjects it
    knows costs no query. Sound for a reader that sees UserForgotten events (a projector of
    a read model that erases): forgetting destroys the key *before* it appends
    UserForgotten, so once the reader passes that event it must not open the user's values
    any more, and `open_envelopes` drops the key there. A key is made before anything is
    sealed with it and never remade, and a destroyed one stays so: nothing else can make
    an entry wrong. Bounded: the oldest entries go first."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._keys: dict[str, bytes | None] = {}

    def known(self, subjects: set[str]) -> dict[str, bytes | None]:
        return {s: self._keys[s] for s in subjects if s in self._keys}

    def remember(self, keys: dict[str, bytes | None]) -> None:
        for subject, key in keys.items():
            self._keys.pop(subject, None)
            self._keys[subject] = key
        while len(self._keys) > self.limit:
            del self._keys[next(iter(self._keys))]

    def forget(self, subject: str) -> None:
        self._keys.pop(subject, None)
        self._keys[subject] = None


async def open_envelopes(
    conn: psycopg.AsyncConnection[Any],
    envelopes: Sequence[Envelope],
    cache: KeyCache | None = None,
) -> Sequence[Envelope]:
    """`envelopes` (in log order) with their personal fields opened (ERASED where the key
    is gone), for readers that copy them into read models; the rest are passed through
    untouched. With a `cache`, keys it knows are not looked up (see KeyCache)."""
    docs: dict[int, dict[str, Any]] = {}
    subjects: set[str] = set()
    for i, envelope in enumerate(envelopes):
        if envelope.type == "UserForgotten":
            # The key was destroyed before this event was appended: nothing of theirs
            # opens any more, here (the store says so too) or in later batches.
            if cache is not None:
                cache.forget(_FORGOTTEN.decode(envelope.data).user_id)
            continue
        fields = PERSONAL.get(envelope.type)
        if fields is None:
            continue
        doc: dict[str, Any] = msgspec.json.decode(envelope.data)
        found = [s for f in fields if isinstance(doc.get(f), str) and (s := subject_of(doc[f]))]
        if found:
            docs[i] = doc
            subjects.update(found)
    if not docs:
        return envelopes
    keys = cache.known(subjects) if cache is not None else {}
    if missing := subjects - keys.keys():
        looked_up: dict[str, bytes | None] = dict.fromkeys(missing)
        looked_up.update(await keys_of(conn, missing))
        if cache is not None:
            cache.remember(looked_up)
        keys.update(looked_up)
    opened = list(envelopes)
    for i, doc in docs.items():
        for field in PERSONAL[envelopes[i].type]:
            value = doc.get(field)
            if isinstance(value, str) and (subject := subject_of(value)) is not None:
                doc[field] = open_with(keys.get(subject), value)
        opened[i] = msgspec.structs.replace(envelopes[i], data=msgspec.Raw(_ENCODER.encode(doc)))
    return opened


_ENCODER = msgspec.json.Encoder()


class _Forgotten(msgspec.Struct):
    user_id: str


_FORGOTTEN = msgspec.json.Decoder(_Forgotten)


class Vault:
    """The keys, for a process that writes or reads personal data: seals with a user's key
    (made on first use), opens, and forgets. Keys are cached for KEY_TTL_S."""

    def __init__(self, pool: AsyncConnectionPool, pepper: bytes) -> None:
        self._pool = pool
        self.pepper = pepper
        self._cache: dict[str, tuple[bytes | None, float]] = {}

    @classmethod
    async def load(cls, pool: AsyncConnectionPool) -> Vault:
        """The vault of the database `pool` reaches (the migrations made its pepper)."""
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT secret FROM vault_secrets WHERE name = 'username_pepper'"
            )
            row = await cur.fetchone()
        if row is None:
            raise VaultError("no username pepper: run `hubbub migrate`")
        return cls(pool, bytes(row[0]))

    def username_stream(self, username: str) -> str:
        """The guard stream that makes `username` unique."""
        return username_stream(username, self.pepper)

    async def seal(self, subject: str, *values: str) -> tuple[str, ...]:
        """`values` sealed with the subject's key, made now if they have none yet;
        ForgottenUser when they were forgotten."""
        key = await self._key(subject, create=True)
        if key is None:
            raise ForgottenUser(subject)
        return tuple(seal_with(key, subject, v) for v in values)

    async def reveal(self, value: str) -> str:
        """The clear text of one sealed value (ERASED when its key is gone)."""
        subject = subject_of(value)
        if subject is None:
            return value
        return open_with(await self._key(subject, create=False), value)

    async def forget(self, subject: str) -> bool:
        """Destroy the subject's key for good (and make sure none is made later); True when
        there was a key to destroy. The old row version is vacuumed away at once; backups
        and WAL archives older than this still hold the key (docs/OPERATIONS.md)."""
        async with self._pool.connection() as conn:
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT key IS NOT NULL FROM user_keys WHERE user_id = %s FOR UPDATE",
                    (subject,),
                )
                row = await cur.fetchone()
                await conn.execute(
                    "INSERT INTO user_keys AS k (user_id, key, forgotten_at)"
                    " VALUES (%s, NULL, now()) ON CONFLICT (user_id)"
                    " DO UPDATE SET key = NULL, forgotten_at = coalesce(k.forgotten_at, now())",
                    (subject,),
                )
            await conn.execute("VACUUM user_keys")
        self._cache[subject] = (None, time.monotonic() + KEY_TTL_S)
        return bool(row and row[0])

    async def _key(self, subject: str, *, create: bool) -> bytes | None:
        cached = self._cache.get(subject)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self._pool.connection() as conn:
            if create:
                cur = await conn.execute(_KEY_FOR, (subject, AESGCM.generate_key(256), subject))
                row = await cur.fetchone()
                if row is not None:
                    key = bytes(row[0]) if row[0] is not None else None
                else:
                    # Another request made the key while ours waited on its insert: this
                    # statement's snapshot predates that commit, a new statement sees it.
                    found = await keys_of(conn, {subject})
                    assert subject in found, "a key row conflicted but cannot be read"
                    key = found[subject]
            else:
                key = (await keys_of(conn, {subject})).get(subject)
        self._cache[subject] = (key, now + KEY_TTL_S)
        return key
