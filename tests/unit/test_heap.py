"""The collector's settings for long-running parts (infra.heap)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from infra import heap


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored")
def test_tune_spaces_young_collections_out_and_keeps_the_older_ones() -> None:
    gc.set_threshold(700, 10, 10)
    heap.tune()
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, 10, 10)


@pytest.mark.usefixtures("restored")
def test_settle_collects_cycles_then_freezes_what_is_live() -> None:
    class Node:
        other: Node

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    gone = weakref.ref(a)
    del a, b
    kept = [[n] for n in range(10)]  # lists are tracked by the collector
    heap.settle()
    assert gone() is None
    in_sight = {id(o) for o in gc.get_objects()}  # generations 0-2: frozen ones are not
    assert not any(id(o) in in_sight for o in kept)
