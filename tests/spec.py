"""given(events).when(command).then(events) / .raises(Error): deciders read as specifications."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pytest

S = TypeVar("S")


@dataclass(frozen=True)
class Decider(Generic[S]):
    """A decider's three parts, as its module defines them."""

    decide: Callable[[Any, S], Sequence[Any]]
    evolve: Callable[[S, Any], S]
    initial: S

    def given(self, *events: Any) -> _When[S]:
        state = self.initial
        for event in events:
            state = self.evolve(state, event)
        return _When(self, state)


@dataclass(frozen=True)
class _When(Generic[S]):
    decider: Decider[S]
    state: S

    def when(self, command: Any) -> _Then[S]:
        return _Then(self.decider, self.state, command)


@dataclass(frozen=True)
class _Then(Generic[S]):
    decider: Decider[S]
    state: S
    command: Any

    def then(self, *expected: Any) -> None:
        assert list(self.decider.decide(self.command, self.state)) == list(expected)

    def raises(self, error: type[Exception]) -> pytest.ExceptionInfo[Exception]:
        with pytest.raises(error) as info:
            self.decider.decide(self.command, self.state)
        return info
