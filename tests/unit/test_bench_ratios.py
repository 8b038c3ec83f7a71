"""The harness's ratios: a ratio `of` a number both results carry divides those numbers."""

from __future__ import annotations

from bench.result import Result
from bench.runner import ratios

_NAME = "chat_send_to_visible / floor_send_to_visible, server CPU a message"


def _result(name: str, **extra: float) -> Result:
    return Result(name=name, value=10.0, unit="ms", extra=dict(extra))


def test_a_ratio_of_an_extra_divides_the_two_results_numbers() -> None:
    found = {r.name: r for r in ratios([
        _result("chat_send_to_visible", server_cpu_us_per_op=1800.0),
        _result("floor_send_to_visible", server_cpu_us_per_op=1200.0),
    ])}  # fmt: skip
    ratio = found[_NAME]
    assert ratio.value == 1.5
    assert ratio.how == "server_cpu_us_per_op: 1800 / 1200"
    assert ratio.target is None and ratio.passed is None


def test_a_side_without_the_number_is_named() -> None:
    found = {r.name: r for r in ratios([
        _result("chat_send_to_visible", server_cpu_us_per_op=1800.0),
        _result("floor_send_to_visible"),
    ])}  # fmt: skip
    ratio = found[_NAME]
    assert ratio.value is None
    assert ratio.reason == "floor_send_to_visible reports no server_cpu_us_per_op"


def test_a_missing_workload_is_named() -> None:
    found = {
        r.name: r for r in ratios([_result("floor_send_to_visible", server_cpu_us_per_op=1.0)])
    }
    assert found[_NAME].reason == "chat_send_to_visible has no figure in this run"
