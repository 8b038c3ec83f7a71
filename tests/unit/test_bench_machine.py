"""The machine facts a bench report carries: the Python speed sessions compare machines by."""

from __future__ import annotations

import time

from bench.machine import python_speed


def test_python_speed_times_the_loop_at_module_level() -> None:
    # The loop's globals make it several times slower than the same loop in a function;
    # a timing that ran it as locals (or skipped it) would be far under this.
    def as_locals() -> float:
        started = time.perf_counter()
        x = 0
        for i in range(3_000_000):
            x += i
        return time.perf_counter() - started

    seconds = python_speed(rounds=1)
    assert 0.05 < seconds < 10.0
    assert seconds > 1.2 * min(as_locals() for _ in range(2))
