"""Sealed values: what the vault's pure half promises (keys and forgetting are integration)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from events.envelope import Envelope
from events.personal import ERASED, erased
from infra.vault import PREFIX, KeyCache, open_envelopes, open_with, seal_with, subject_of

ANN = "0192f0a0-0000-7000-8000-000000000001"
BOB = "0192f0a0-0000-7000-8000-000000000002"
KEY = os.urandom(32)


def test_a_sealed_value_opens_with_its_key_and_names_its_subject() -> None:
    sealed = seal_with(KEY, ANN, "hello, ünïcode ✓")
    assert sealed.startswith(PREFIX + ANN + ":") and "hello" not in sealed
    assert subject_of(sealed) == ANN
    assert open_with(KEY, sealed) == "hello, ünïcode ✓"
    assert seal_with(KEY, ANN, "hello") != seal_with(KEY, ANN, "hello")  # fresh nonces


def test_without_its_key_a_sealed_value_reads_as_erased() -> None:
    sealed = seal_with(KEY, ANN, "hello")
    assert open_with(None, sealed) == ERASED
    assert open_with(os.urandom(32), sealed) == ERASED
    assert erased(open_with(None, sealed)) is None


def test_a_value_moved_to_another_subject_does_not_open() -> None:
    # the subject is authenticated: ann's ciphertext relabelled as bob's fails
    moved = seal_with(KEY, ANN, "hello").replace(ANN, BOB)
    assert open_with(KEY, moved) == ERASED


@pytest.mark.parametrize(
    "value",
    ["plain text", "", "sealed:v1:", "sealed:v1:not-a-uuid:abc", "sealed:v2:" + ANN + ":abc"],
)
def test_plain_and_foreign_values_pass_through(value: str) -> None:
    assert subject_of(value) is None
    assert open_with(KEY, value) == value


@pytest.mark.parametrize("body", ["", "!!!", "AAAA", "A" * 40])
def test_a_damaged_sealed_value_reads_as_erased(body: str) -> None:
    assert open_with(KEY, f"{PREFIX}{ANN}:{body}") == ERASED


def _envelope(type_name: str, data: dict[str, object]) -> Envelope:
    return Envelope(
        event_id=str(uuid.uuid4()), stream_id="channel-x", stream_version=1, position="0" * 32,
        type=type_name, schema_version=1, recorded_at=datetime.now(UTC),
        data=msgspec.Raw(msgspec.json.encode(data)), metadata=msgspec.Raw(b"{}"),
        prev_hash="", hash="",
    )  # fmt: skip


async def test_a_projector_cache_opens_known_keys_and_drops_them_at_user_forgotten() -> None:
    cache = KeyCache()
    cache.remember({ANN: KEY})
    sent = _envelope("MessageSent", {"text": seal_with(KEY, ANN, "hi"), "author_id": ANN})
    no_database: Any = None  # every key is known: nothing may be looked up
    [opened] = await open_envelopes(no_database, [sent], cache)
    assert msgspec.json.decode(opened.data)["text"] == "hi"
    forgotten = _envelope("UserForgotten", {"user_id": ANN})
    late = _envelope("MessageSent", {"text": seal_with(KEY, ANN, "late"), "author_id": ANN})
    opened_late = await open_envelopes(no_database, [forgotten, late], cache)
    assert msgspec.json.decode(opened_late[1].data)["text"] == ERASED
    [again] = await open_envelopes(no_database, [sent], cache)  # and in later batches
    assert msgspec.json.decode(again.data)["text"] == ERASED


def test_the_cache_is_bounded() -> None:
    cache = KeyCache(limit=2)
    cache.remember({ANN: KEY, BOB: KEY})
    cache.remember({"c": KEY})
    assert cache.known({ANN, BOB, "c"}) == {BOB: KEY, "c": KEY}
