"""Sealed values: what the vault's pure half promises (keys and forgetting are integration)."""

from __future__ import annotations

import os

import pytest

from events.personal import ERASED, erased
from infra.vault import PREFIX, open_with, seal_with, subject_of

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
